"""Prints the tabs of the demo's spreadsheet, as the local Sheets double's
`show` command gives them (one JSON line on stdin): title, grid size and
the first rows."""

import json
import sys

for tab in json.load(sys.stdin)["tabs"]:
    print(f"{tab['rows']:>8} rows x {tab['columns']}  tab {tab['title']}")
    for row in tab["firstRows"]:
        print("            " + " | ".join(str(cell) for cell in row))
