"""`python -m beam_etl.interop`: print the path of beam_etl's Beam YAML provider file."""

from beam_etl.interop.provider import PROVIDER_FILE

if __name__ == "__main__":
    print(PROVIDER_FILE)
