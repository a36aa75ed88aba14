#!/usr/bin/env python3
"""A small in-memory schema registry speaking the Confluent Schema Registry REST API.

For development and tests only. The real servers (Apicurio Registry, Karapace, Confluent's
own) cannot be installed from the package registries this project may use (see README,
"Schema registry records"), so this serves the part of the documented API that producers'
serializers and freshet call:

  POST /subjects/{subject}/versions      register (same schema text, type and references
                                         → same global ID; a new one → next version)
  POST /subjects/{subject}               look a schema up under a subject
  GET  /subjects                         subject names
  GET  /subjects/{subject}/versions      version numbers
  GET  /subjects/{subject}/versions/{v}  one version (`latest` too)
  GET  /schemas/ids/{id}                 a schema by global ID, with its references
  GET  /schemas/types, GET/PUT /config[/{subject}]

Errors use the API's shape: {"error_code": 40401|40402|40403|42201, "message": ...}.
No compatibility checks are made. With FRESHET_REGISTRY_USER and FRESHET_REGISTRY_PASSWORD
set, every request needs that basic-auth pair (401 otherwise).

    python scripts/schema_registry.py [--host 127.0.0.1] [--port 8081] [--port-file FILE]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
TYPES = ("AVRO", "PROTOBUF", "JSON")


class Store:
    """Schemas by global ID, and each subject's versions (lists of IDs)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.schemas: list[dict] = []  # index = id - 1
        self.subjects: dict[str, list[int]] = {}
        self.compatibility = "BACKWARD"

    @staticmethod
    def _identity(schema: dict) -> tuple:
        refs = tuple(
            (r.get("name"), r.get("subject"), int(r.get("version", 0)))
            for r in schema.get("references") or []
        )
        return (schema.get("schemaType", "AVRO"), schema["schema"], refs)

    def register(self, subject: str, schema: dict) -> int:
        with self.lock:
            identity = self._identity(schema)
            schema_id = next(
                (i + 1 for i, s in enumerate(self.schemas) if self._identity(s) == identity),
                None,
            )
            if schema_id is None:
                self.schemas.append(schema)
                schema_id = len(self.schemas)
            versions = self.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return schema_id

    def lookup(self, subject: str, schema: dict) -> dict | None:
        with self.lock:
            identity = self._identity(schema)
            for version, schema_id in enumerate(self.subjects.get(subject, []), start=1):
                if self._identity(self.schemas[schema_id - 1]) == identity:
                    return self._version(subject, version, schema_id)
            return None

    def by_id(self, schema_id: int) -> dict | None:
        with self.lock:
            if 1 <= schema_id <= len(self.schemas):
                return self._body(self.schemas[schema_id - 1])
            return None

    def version(self, subject: str, version: str) -> dict | None:
        with self.lock:
            versions = self.subjects.get(subject)
            if not versions:
                return None
            number = len(versions) if version in ("latest", "-1") else int(version)
            if not 1 <= number <= len(versions):
                return None
            return self._version(subject, number, versions[number - 1])

    def _version(self, subject: str, number: int, schema_id: int) -> dict:
        body = self._body(self.schemas[schema_id - 1])
        body.update(subject=subject, version=number, id=schema_id)
        return body

    @staticmethod
    def _body(schema: dict) -> dict:
        body = {"schema": schema["schema"]}
        # As the reference server does: schemaType is left out for Avro.
        if schema.get("schemaType", "AVRO") != "AVRO":
            body["schemaType"] = schema["schemaType"]
        if schema.get("references"):
            body["references"] = schema["references"]
        return body


class Handler(BaseHTTPRequestHandler):
    store: Store
    credentials: str | None

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass

    def _send(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: int, message: str) -> None:
        self._send(status, {"error_code": code, "message": message})

    def _authorized(self) -> bool:
        if self.credentials is None:
            return True
        if self.headers.get("Authorization") == f"Basic {self.credentials}":
            return True
        self._error(401, 401, "Unauthorized")
        return False

    def _body(self) -> dict | None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._error(422, 42201, "request body is not JSON")
            return None
        schema_type = body.get("schemaType", "AVRO")
        if not isinstance(body.get("schema"), str) or schema_type not in TYPES:
            self._error(422, 42201, "expected {schema: string, schemaType?: AVRO|PROTOBUF|JSON}")
            return None
        schema = {"schema": body["schema"], "schemaType": schema_type}
        if body.get("references"):
            schema["references"] = body["references"]
        return schema

    def _path(self) -> list[str]:
        return [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/") if p]

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if not self._authorized():
            return
        path = self._path()
        store = self.store
        if path == ["subjects"]:
            with store.lock:
                return self._send(200, sorted(store.subjects))
        if path == ["schemas", "types"]:
            return self._send(200, list(TYPES))
        if path[:1] == ["config"]:
            return self._send(200, {"compatibilityLevel": store.compatibility})
        if len(path) == 3 and path[:2] == ["schemas", "ids"] and path[2].isdigit():
            body = store.by_id(int(path[2]))
            if body is None:
                return self._error(404, 40403, f"Schema {path[2]} not found")
            return self._send(200, body)
        if len(path) == 3 and path[0] == "subjects" and path[2] == "versions":
            with store.lock:
                versions = store.subjects.get(path[1])
            if not versions:
                return self._error(404, 40401, f"Subject '{path[1]}' not found.")
            return self._send(200, list(range(1, len(versions) + 1)))
        if len(path) == 4 and path[0] == "subjects" and path[2] == "versions":
            if not re.fullmatch(r"latest|-1|\d+", path[3]):
                return self._error(422, 42202, "invalid version")
            body = store.version(path[1], path[3])
            if body is None:
                return self._error(404, 40402, f"Version {path[3]} not found.")
            return self._send(200, body)
        self._error(404, 404, "Not found")

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorized():
            return
        path = self._path()
        if len(path) == 3 and path[0] == "subjects" and path[2] == "versions":
            schema = self._body()
            if schema is not None:
                self._send(200, {"id": self.store.register(path[1], schema)})
            return
        if len(path) == 2 and path[0] == "subjects":
            schema = self._body()
            if schema is None:
                return
            found = self.store.lookup(path[1], schema)
            if found is None:
                return self._error(404, 40403, "Schema not found")
            return self._send(200, found)
        self._error(404, 404, "Not found")

    def do_PUT(self) -> None:  # noqa: N802
        if not self._authorized():
            return
        path = self._path()
        if path[:1] == ["config"]:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            level = body.get("compatibility") or body.get("compatibilityLevel") or "BACKWARD"
            self.store.compatibility = level
            return self._send(200, {"compatibility": level})
        self._error(404, 404, "Not found")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    args = parser.parse_args()
    user, password = os.environ.get("FRESHET_REGISTRY_USER"), os.environ.get("FRESHET_REGISTRY_PASSWORD")
    Handler.store = Store()
    Handler.credentials = (
        base64.b64encode(f"{user}:{password}".encode()).decode() if user and password else None
    )
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(server.server_address[1]))
        os.replace(tmp, args.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
