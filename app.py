"""The web chat: `python app.py` indexes corpus/ if needed and serves on http://127.0.0.1:7860."""
import sys

from qa.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
