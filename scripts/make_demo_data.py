"""Write the bundled demo's `orders.csv` (deterministic: the same bytes on every run).

About 3,000 orders with the dirt real extracts have: exact duplicate rows, updated versions of
an order (same order_id, later updated_at), missing customer ids, an amount that is not a
number, an order id that is not a number, a line with a missing field, a line with bytes that
are not UTF-8, and cancelled orders to filter out.

Usage: python scripts/make_demo_data.py beam_etl/demo/orders.csv
"""

import random
import sys
from datetime import date, datetime, timedelta

COUNTRIES = ["DE", "FR", "ES", "IT", "NL", "PL", "SE", "US", "GB", "JP"]
STATUSES = ["paid"] * 8 + ["shipped"] * 6 + ["cancelled"]
HEADER = "order_id,customer_id,customer_email,country,order_date,amount,status,updated_at"


def _row(rng: random.Random, order_id: int) -> list[str]:
    customer = rng.randint(1000, 1999)
    day = date(2025, 1, 1) + timedelta(days=rng.randint(0, 364))
    updated = datetime(day.year, day.month, day.day, rng.randint(0, 23), rng.randint(0, 59))
    email = f"Customer{customer}@Example.COM " if rng.random() < 0.1 else f"c{customer}@example.com"
    return [
        str(order_id),
        str(customer),
        email,
        rng.choice(COUNTRIES),
        day.isoformat(),
        f"{rng.uniform(5, 900):.2f}",
        rng.choice(STATUSES),
        updated.isoformat(sep=" "),
    ]


def rows(count: int = 3000, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    lines = [",".join(_row(rng, 100000 + i)).encode() for i in range(count)]
    for index in rng.sample(range(count), 20):  # exact duplicates
        lines.insert(rng.randint(0, len(lines)), lines[index])
    for index in rng.sample(range(count), 12):  # a later update of the same order
        fields = lines[index].decode().split(",")
        fields[6], fields[7] = "shipped", fields[4] + " 23:59:00"
        lines.append(",".join(fields).encode())
    for index in rng.sample(range(len(lines)), 15):  # missing customer id
        fields = lines[index].decode().split(",")
        fields[1] = ""
        lines[index] = ",".join(fields).encode()
    lines[41] = b"100041,1041,c1041@example.com,DE,2025-02-11,12.5x,paid,2025-02-11 08:00:00"
    lines[97] = b"A100097,1097,c1097@example.com,FR,2025-03-01,10.00,paid,2025-03-01 09:00:00"
    lines[150] = b"100150,1150,c1150@example.com,ES,2025-04-02,99.90,paid"
    lines[300] = (
        "100300,1300,j\u00fcrgen@example.com,DE,2025-05-05,5.00,paid,2025-05-05 10:00:00".encode(
            "latin-1"
        )
    )
    lines[420] = (
        b'100420,1420,"c1420@example.com",NL,2025-06-06,"1,234.00",paid,2025-06-06 11:00:00'
    )
    return [HEADER.encode(), *lines]


if __name__ == "__main__":
    with open(sys.argv[1], "wb") as out:
        out.write(b"\n".join(rows()) + b"\n")
