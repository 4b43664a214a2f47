"""The OpenAPI 3 document of /api/v1 (written by hand: a dozen routes, each said once)."""

from __future__ import annotations

from typing import Any

from clusterwatch import __version__

_ERROR = {
    "description": "bad request",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_UNAUTHORIZED = {
    "description": "missing or wrong token",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_PAGE_PARAMS = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
    {
        "name": "before",
        "in": "query",
        "schema": {"type": "integer", "minimum": 0},
        "description": "cursor: the `next` of the previous page",
    },
]


def _ok(schema: dict[str, Any], description: str = "ok") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _page(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "next"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
            "next": {"type": ["integer", "null"]},
        },
    }


def spec() -> dict[str, Any]:
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
    read = {"responses": {"401": _UNAUTHORIZED, "400": _ERROR}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "clusterwatch",
            "version": __version__,
            "description": "The AI cluster's health: checks, history, incidents, the healer's actions, "
            "silences. Changing state needs `Authorization: Bearer TOKEN`.",
        },
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "Entity": {
                    "type": "object",
                    "required": ["name", "check", "status", "message"],
                    "properties": {
                        "name": {"type": "string"},
                        "check": {"type": "string"},
                        "kind": {"type": "string"},
                        "node": {"type": ["string", "null"]},
                        "group": {"type": ["string", "null"]},
                        "status": {"enum": ["ok", "warning", "critical", "unknown"]},
                        "hard": {"type": ["string", "null"]},
                        "since": {"type": "number"},
                        "message": {"type": "string"},
                        "target": {"type": "string"},
                        "latency_ms": {"type": ["number", "null"]},
                        "checked_at": {"type": "number"},
                        "flapping": {"type": "boolean"},
                        "incident": {"type": ["string", "null"]},
                        "affected_by": {"type": ["string", "null"]},
                        "version": {"type": "integer"},
                    },
                },
                "Status": {
                    "type": "object",
                    "required": ["status", "version", "summary", "checks"],
                    "properties": {
                        "status": {"enum": ["ok", "warning", "critical", "unknown"]},
                        "version": {"type": "integer"},
                        "generated_at": {"type": "number"},
                        "open_incidents": {"type": "integer"},
                        "summary": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "needs_person": {
                            "type": "array",
                            "description": "restart targets the healer gave up on, newest first: shown until "
                            "`clusterwatch heal reset` or a recovery gives the budget back",
                            "items": {"$ref": "#/components/schemas/NeedsPerson"},
                        },
                        "needs_person_error": {
                            "type": "string",
                            "description": "only when the store could not be read: `needs_person` is the last read",
                        },
                        "checks": {"type": "array", "items": {"$ref": "#/components/schemas/Entity"}},
                    },
                },
                "NeedsPerson": {
                    "type": "object",
                    "description": "a target the healer gave up on (`remediation_exhausted`): a person is needed",
                    "required": ["target", "check", "entity", "since", "attempts", "healthy_since", "reset"],
                    "properties": {
                        "target": {"type": "string", "example": "supervisor:dask-worker-w2"},
                        "check": {"type": ["string", "null"]},
                        "entity": {"type": ["string", "null"]},
                        "since": {"type": "number", "description": "when the healer gave up"},
                        "attempts": {"type": "integer", "description": "since it last recovered or was reset"},
                        "healthy_since": {
                            "type": ["number", "null"],
                            "description": "healthy again meanwhile: the budget comes back after `stable_for`",
                        },
                        "last_attempt": {
                            "type": ["object", "null"],
                            "properties": {
                                "started": {"type": "number"},
                                "finished": {"type": ["number", "null"]},
                                "check_name": {"type": "string"},
                                "entity": {"type": "string"},
                                "action": {"type": "string"},
                                "attempt": {"type": "integer"},
                                "outcome": {"type": "string"},
                                "detail": {"type": ["string", "null"]},
                            },
                        },
                        "reset": {"type": "string", "example": "clusterwatch heal reset dask"},
                    },
                },
                "Observation": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "ts": {"type": "number"},
                        "status": {"type": "string"},
                        "message": {"type": "string"},
                    },
                },
                "Event": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "ts": {"type": "number"},
                        "kind": {"type": "string"},
                        "entity": {"type": "string"},
                        "message": {"type": "string"},
                    },
                },
                "Incident": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "entity": {"type": "string"},
                        "opened": {"type": "number"},
                        "closed": {"type": ["number", "null"]},
                        "status": {"enum": ["warning", "critical", "unknown"], "description": "current or last"},
                        "worst": {"enum": ["warning", "critical", "unknown"], "description": "worst seen"},
                    },
                },
                "Action": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "target": {"type": "string"},
                        "action": {"type": "string"},
                        "outcome": {
                            "type": "string",
                            "description": "running, succeeded (this action fixed it), recovered (healthy again, "
                            "not by this action), failed, interrupted, dry_run",
                        },
                    },
                },
                "Silence": {
                    "type": "object",
                    "required": ["id", "matchers", "starts", "ends", "reason"],
                    "properties": {
                        "id": {"type": "string"},
                        "matchers": {"type": "object"},
                        "starts": {"type": "number"},
                        "ends": {"type": "number"},
                        "reason": {"type": "string"},
                        "created_by": {"type": "string"},
                    },
                },
                "Group": {
                    "type": "object",
                    "description": "The group of monitors sharing one PostgreSQL store, as this monitor last read it "
                    "(every lease/4, at most 2 s). Alone: only `ha: false`. Times are seconds since the epoch on "
                    "the database's clock; `lease.now` is its time at the read, `read_age_s` how long ago that was.",
                    "required": ["ha"],
                    "properties": {
                        "ha": {"type": "boolean", "description": "false: this monitor is alone"},
                        "leader": {
                            "type": ["string", "null"],
                            "description": "the node holding a current lease, at the read",
                        },
                        "lease": {
                            "type": ["object", "null"],
                            "properties": {
                                "holder": {"type": ["string", "null"]},
                                "node": {"type": ["string", "null"]},
                                "epoch": {"type": "integer"},
                                "acquired_at": {"type": ["number", "null"]},
                                "renewed_at": {"type": ["number", "null"]},
                                "expires_at": {"type": ["number", "null"]},
                                "now": {"type": "number"},
                            },
                        },
                        "members": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "member": {"type": "string"},
                                    "node": {"type": "string"},
                                    "started": {"type": "number"},
                                    "last_seen": {"type": "number"},
                                    "epoch": {"type": ["integer", "null"]},
                                    "leads": {"type": "integer"},
                                },
                            },
                        },
                        "self": {
                            "type": ["object", "null"],
                            "description": "this monitor: whether it leads now, its epoch, its takeovers and "
                            "stand-downs (`log`, oldest first; `at` on this monitor's clock)",
                            "properties": {
                                "member": {"type": "string"},
                                "node": {"type": "string"},
                                "leading": {"type": "boolean"},
                                "epoch": {"type": ["integer", "null"]},
                                "lease_s": {"type": "number"},
                                "last_error": {"type": ["string", "null"]},
                                "log": {"type": "array", "items": {"type": "object"}},
                            },
                        },
                        "read_age_s": {"type": ["number", "null"]},
                        "stale": {"type": "boolean", "description": "the last good read is too old to tell"},
                        "error": {"type": ["string", "null"], "description": "why the last read failed"},
                    },
                },
                "NewSilence": {
                    "type": "object",
                    "required": ["matchers", "duration", "reason"],
                    "properties": {
                        "matchers": {
                            "type": "object",
                            "minProperties": 1,
                            "propertyNames": {"enum": ["check", "entity", "kind", "node", "severity"]},
                            "additionalProperties": {"type": "string", "minLength": 1},
                        },
                        "duration": {"type": "string", "example": "2h", "pattern": r"^[1-9][0-9]{0,6}(s|m|h|d)$"},
                        "reason": {"type": "string", "minLength": 1},
                    },
                },
            },
        },
        "security": [{"bearer": []}, {}],
        "paths": {
            "/api/v1/status": {
                "get": {
                    **read,
                    "summary": "every entity, worst first by the client; filterable; and what needs a person",
                    "parameters": [
                        {"name": "status", "in": "query", "schema": {"enum": ["ok", "warning", "critical", "unknown"]}},
                        {"name": "kind", "in": "query", "schema": {"type": "string"}},
                        {"name": "node", "in": "query", "schema": {"type": "string"}},
                        {"name": "q", "in": "query", "schema": {"type": "string"}, "description": "name contains"},
                        {
                            "name": "since_version",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0},
                            "description": "only entities changed after this version (live updates)",
                        },
                    ],
                    "responses": {**read["responses"], "200": _ok({"$ref": "#/components/schemas/Status"})},
                }
            },
            "/api/v1/checks": {
                "get": {
                    **read,
                    "summary": "the configured checks and nodes",
                    "responses": {**read["responses"], "200": _ok({"type": "object"})},
                }
            },
            "/api/v1/checks/{name}": {
                "get": {
                    **read,
                    "summary": "one entity, with metrics and uptime",
                    "parameters": [name],
                    "responses": {**read["responses"], "200": _ok({"type": "object"}), "404": _ERROR},
                }
            },
            "/api/v1/checks/{name}/history": {
                "get": {
                    **read,
                    "summary": "recent raw observations, newest first",
                    "parameters": [name, *_PAGE_PARAMS],
                    "responses": {**read["responses"], "200": _ok(_page("Observation"))},
                }
            },
            "/api/v1/events": {
                "get": {
                    **read,
                    "summary": "state changes, incidents, remediation, newest first",
                    "parameters": [
                        *_PAGE_PARAMS,
                        {"name": "entity", "in": "query", "schema": {"type": "string"}},
                        {"name": "kind", "in": "query", "schema": {"type": "string"}},
                        {"name": "check", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {**read["responses"], "200": _ok(_page("Event"))},
                }
            },
            "/api/v1/incidents": {
                "get": {
                    **read,
                    "summary": "incidents, newest first",
                    "parameters": [
                        *_PAGE_PARAMS,
                        {"name": "state", "in": "query", "schema": {"enum": ["open", "closed"]}},
                    ],
                    "responses": {**read["responses"], "200": _ok(_page("Incident"))},
                }
            },
            "/api/v1/actions": {
                "get": {
                    **read,
                    "summary": "the healer's actions and their outcomes",
                    "parameters": _PAGE_PARAMS,
                    "responses": {**read["responses"], "200": _ok(_page("Action"))},
                }
            },
            "/api/v1/silences": {
                "get": {
                    **read,
                    "summary": "silences in force",
                    "responses": {**read["responses"], "200": _ok({"type": "object"})},
                },
                "post": {
                    "summary": "add a silence (token required)",
                    "security": [{"bearer": []}],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewSilence"}}},
                    },
                    "responses": {
                        "201": _ok({"$ref": "#/components/schemas/Silence"}, "created"),
                        "400": _ERROR,
                        "401": _UNAUTHORIZED,
                    },
                },
            },
            "/api/v1/silences/{id}": {
                "delete": {
                    "summary": "end a silence (token required)",
                    "security": [{"bearer": []}],
                    "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {"204": {"description": "removed"}, "404": _ERROR, "401": _UNAUTHORIZED},
                }
            },
            "/api/v1/heal/reset": {
                "post": {
                    "summary": "give a check's (or a restart target's) restart budget back, as `clusterwatch heal "
                    "reset` does (token required); the healer does it within a second or two",
                    "security": [{"bearer": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["name"],
                                    "properties": {"name": {"type": "string", "minLength": 1}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": _ok(
                            {
                                "type": "object",
                                "required": ["asked", "command"],
                                "properties": {"asked": {"type": "string"}, "command": {"type": "string"}},
                            },
                            "asked",
                        ),
                        "400": _ERROR,
                        "401": _UNAUTHORIZED,
                        "404": _ERROR,
                    },
                }
            },
            "/api/v1/group": {
                "get": {
                    **read,
                    "summary": "the group of monitors (high availability): who leads, the members, this monitor",
                    "responses": {**read["responses"], "200": _ok({"$ref": "#/components/schemas/Group"})},
                }
            },
            "/api/v1/openapi.json": {
                "get": {"summary": "this document", "security": [{}], "responses": {"200": _ok({"type": "object"})}}
            },
        },
    }
