"""The Athena stand-in of `popularity rank --engine athena-standin`
(docs/scaling.md, "Running the Athena path locally"): DuckDB runs the
queries the state machine starts, with output shaped as Athena's UNLOAD
writes it. Two commands, each answering one JSON document on stdout:

  athena_standin.py definition TEMPLATE LOGICAL_ID
      The state machine LOGICAL_ID of the SAM template: its DefinitionUri,
      the definition file's JSON and its DefinitionSubstitutions (intrinsics
      as written). The local orchestrator executes exactly that definition.

  athena_standin.py query < REQUEST.json
      REQUEST: {"select": SQL, "format": "PARQUET", "compression":
      "SNAPPY"|"ZSTD"|..., "tables": {name: [file, ...]}, "hive": [table
      names partitioned by date=...], "constants": {table: {column: value}},
      "out": DIR, "files": K, "query_id": ID}
      Runs SELECT in DuckDB over views of the given Parquet files (a table
      of `constants` gets those columns, as a projected partition does),
      names every output column in lower case as Athena does, and writes
      the rows into DIR as up to K Parquet files (DuckDB marks a column
      without nulls required; Trino writes every column optional): when a
      column `searchrank` exists, blocks of consecutive ranks go round-robin
      to the files, so each file is in rank order and the files interleave;
      otherwise rows are split in blocks.
      Every UNLOAD of the state machines writes Parquet; any other format is
      refused. Answers {"files": [names], "rows": N}; a DuckDB error exits 3
      with the error on stderr.

Only reads the files it is given and writes under DIR; no network.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def definition(template_path, logical_id):
    sys.path.insert(0, HERE)
    from router import load_template  # the router's YAML reader (short-form tags)

    with open(template_path, encoding="utf-8") as f:
        template = load_template(f.read())
    resource = template.get("Resources", {}).get(logical_id)
    if not resource or resource.get("Type") != "AWS::Serverless::StateMachine":
        sys.exit(f"{template_path} has no AWS::Serverless::StateMachine {logical_id}")
    properties = resource.get("Properties", {})
    uri = properties.get("DefinitionUri")
    if not isinstance(uri, str):
        sys.exit(f"{logical_id} has no local DefinitionUri")
    path = os.path.join(os.path.dirname(os.path.abspath(template_path)), uri)
    with open(path, encoding="utf-8") as f:
        body = json.load(f)
    return {
        "definitionUri": uri,
        "definition": body,
        "substitutions": properties.get("DefinitionSubstitutions", {}),
    }


def quoted(name):
    return '"' + name.replace('"', '""') + '"'


def query(request):
    import duckdb

    db = duckdb.connect()
    db.execute("SET TimeZone = 'UTC'")
    hive = set(request.get("hive", []))
    constants = request.get("constants", {})
    for table, files in request["tables"].items():
        extra = "".join(f", {json.dumps(str(v)).replace(chr(34), chr(39))} AS {quoted(c)}"
                        for c, v in constants.get(table, {}).items())
        if files:
            options = ", hive_partitioning = true, hive_types = {'date': VARCHAR}" if table in hive else ""
            db.execute(f"CREATE VIEW {quoted(table)} AS SELECT *{extra} FROM read_parquet({files!r}{options})")
        elif table in ("plays",):
            db.execute(f'CREATE VIEW plays AS SELECT CAST(NULL AS BIGINT) AS trackId, CAST(NULL AS BIGINT) AS plays, '
                       f'CAST(NULL AS VARCHAR) AS "date" WHERE false')
        elif table in ("play_events",):
            db.execute('CREATE VIEW play_events AS SELECT CAST(NULL AS BIGINT) AS trackId, '
                       'CAST(NULL AS TIMESTAMP) AS playedAt, CAST(NULL AS VARCHAR) AS "date" WHERE false')
        else:
            raise RuntimeError(f"no files for the table {table}")
    relation = db.sql(request["select"])
    renamed = ", ".join(f"{quoted(c)} AS {quoted(c.lower())}" for c in relation.columns)
    db.execute(f"CREATE TABLE result AS SELECT {renamed}, row_number() OVER () AS __row FROM ({request['select']})")
    columns = [c.lower() for c in relation.columns]
    rows = db.execute("SELECT count(*) FROM result").fetchone()[0]
    files = max(1, int(request.get("files", 16)))
    order = "searchrank" if "searchrank" in columns else "__row"
    block = max(1, -(-rows // (files * 4)))
    os.makedirs(request["out"], exist_ok=True)
    written = []
    fmt = request["format"].upper()
    if fmt != "PARQUET":
        raise RuntimeError(f"the stand-in writes what the state machines UNLOAD, PARQUET, not {fmt}")
    compression = request.get("compression", "").upper()
    for index in range(files):
        where = f"(({order} - 1) // {block}) % {files} = {index}"
        if db.execute(f"SELECT count(*) FROM result WHERE {where}").fetchone()[0] == 0:
            continue
        name = f"{request['query_id']}_{index:05d}"
        select = f"SELECT {', '.join(quoted(c) for c in columns)} FROM result WHERE {where} ORDER BY {order}"
        codec = compression.lower() or "gzip"  # Athena's default for Parquet
        db.execute(f"COPY ({select}) TO '{os.path.join(request['out'], name)}' (FORMAT parquet, COMPRESSION {codec})")
        written.append(name)
    return {"files": written, "rows": rows}


def main(argv):
    if len(argv) == 4 and argv[1] == "definition":
        json.dump(definition(argv[2], argv[3]), sys.stdout)
    elif len(argv) == 2 and argv[1] == "query":
        try:
            answer = query(json.load(sys.stdin))
        except Exception as error:  # DuckDB's parser, binder and runtime errors alike
            print(f"{type(error).__name__}: {error}", file=sys.stderr)
            sys.exit(3)
        json.dump(answer, sys.stdout)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
