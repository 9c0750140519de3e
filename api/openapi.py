"""The API's OpenAPI 3 document (``GET /openapi.json``): every route, its parameters,
its answers and the one error shape. A new route adds its path here."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from api.dashboard import DEFAULT_MINUTES, MAX_MINUTES, SERIES
from api.predict import MODEL_CHOICES
from tickcast.schema import SYMBOL_RE

bp = Blueprint("openapi", __name__)

# -- the dashboard's routes (api/dashboard.py) ---------------------------------------------

_ERRORS = {s: {"$ref": "#/components/responses/Error"} for s in ("400", "401", "404", "503")}
_SERIES_SCHEMA = {"type": "array", "items": {"type": "array", "minItems": 2, "maxItems": 2,
                                             "items": {"type": "number"}}}
DASHBOARD_PATHS: dict[str, Any] = {
    "/dashboard": {"get": {"summary": "Built-in dashboard (self-contained HTML; polls /dashboard/data)",
                           "responses": {"200": {"description": "the page", "content": {
                               "text/html": {"schema": {"type": "string"}}}}}}},
    "/dashboard/app.js": {"get": {"summary": "The dashboard's script (chart helper and polling)",
                                  "responses": {"200": {"description": "JavaScript", "content": {
                                      "text/javascript": {"schema": {"type": "string"}}}}}}},
    "/dashboard/data": {"get": {
        "summary": "The dashboard's series, each a list of [unix_ms, value]",
        "parameters": [
            {"name": "symbol", "in": "query", "required": False,
             "schema": {"type": "string", "pattern": SYMBOL_RE.pattern}, "example": "BTC/USD",
             "description": "default: the first configured symbol"},
            {"name": "minutes", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_MINUTES, "default": DEFAULT_MINUTES},
             "description": "the range: market-time series end at the symbol's newest candle, "
                            "wall-clock series (dead letters, ingest stats) at now"},
        ],
        "responses": {
            "200": {"description": "series", "content": {"application/json": {"schema": {
                "type": "object",
                "required": ["symbol", "symbols", "minutes", "generated_at", "range", "freshness_seconds",
                             "drift", "series"],
                "properties": {
                    "symbol": {"type": "string"}, "symbols": {"type": "array", "items": {"type": "string"}},
                    "minutes": {"type": "integer"}, "horizon_seconds": {"type": "integer"},
                    "generated_at": {"type": "string", "format": "date-time"},
                    "generated_at_ms": {"type": "integer"}, "range": {"type": "object"},
                    "online_models": {"type": "array", "items": {"type": "string"}},
                    "ingest_stats": {"type": "boolean"},
                    "freshness_seconds": {"type": "object", "additionalProperties": {
                        "type": "number", "nullable": True}},
                    "drift": {"type": "array", "items": {"type": "object"}},
                    "headlines": {"type": "array", "description": "newest news items of the symbol in the range, "
                                  "newest first (untrusted text)", "items": {"type": "object", "properties": {
                                      "ts_ms": {"type": "integer"}, "title": {"type": "string"},
                                      "source": {"type": "string"}, "url": {"type": "string"},
                                      "sentiment": {"type": "number", "nullable": True}}}},
                    "series": {"type": "object", "required": list(SERIES),
                               "additionalProperties": _SERIES_SCHEMA},
                }}}}},
            **_ERRORS,
        }}},
}


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "tickcast inference API", "version": "1.0.0",
             "description": "Predicts crypto prices TICKCAST_HORIZON_SECONDS ahead from Kraken trades."},
    "paths": {
        "/predict": {"get": {
            "summary": "Predicted price at as_of + horizon",
            "parameters": [
                {"name": "symbol", "in": "query", "required": True,
                 "schema": {"type": "string", "pattern": SYMBOL_RE.pattern}, "example": "BTC/USD"},
                {"name": "model", "in": "query", "required": False,
                 "schema": {"type": "string", "enum": list(MODEL_CHOICES), "default": "auto"},
                 "description": "auto = the live choice (README, Live model selection)"},
            ],
            "responses": {
                "200": {"description": "prediction", "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/Prediction"}}}},
                "400": {"$ref": "#/components/responses/Error"},
                "404": {"$ref": "#/components/responses/Error"},
                "503": {"$ref": "#/components/responses/Error"},
            }}},
        "/health": {"get": {"summary": "Each dependency's state", "responses": {
            "200": {"description": "healthy", "content": {"application/json": {"schema": {"type": "object"}}}},
            "503": {"description": "a dependency is down",
                    "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (bearer token if TICKCAST_API_TOKEN is set)",
                             "responses": {
            "200": {"description": "text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
            "401": {"$ref": "#/components/responses/Error"}}}},
        "/models": {"get": {"summary": "Registry listing (bearer token if TICKCAST_API_TOKEN is set)", "responses": {
            "200": {"description": "models and aliases",
                    "content": {"application/json": {"schema": {"type": "object"}}}},
            "401": {"$ref": "#/components/responses/Error"},
            "503": {"$ref": "#/components/responses/Error"}}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {
            "200": {"description": "OpenAPI 3", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        **DASHBOARD_PATHS,
    },
    "components": {
        "schemas": {
            "Prediction": {"type": "object", "required": [
                "symbol", "predicted_price", "horizon_seconds", "as_of", "feature_age_seconds", "model"],
                "properties": {
                    "symbol": {"type": "string"}, "predicted_price": {"type": "number"},
                    "horizon_seconds": {"type": "integer"}, "as_of": {"type": "string", "format": "date-time"},
                    "feature_age_seconds": {"type": "number"}, "price_at_as_of": {"type": "number"},
                    "groups": {"type": "object", "description": "each feature group the model used: "
                               "definition version, as_of (null: no data, e.g. no news) and age",
                               "additionalProperties": {"type": "object", "properties": {
                                   "version": {"type": "string"},
                                   "as_of": {"type": "string", "format": "date-time", "nullable": True},
                                   "age_seconds": {"type": "number", "nullable": True}}}},
                    "model": {"type": "object", "required": ["name", "version"], "properties": {
                        "name": {"type": "string"}, "version": {"type": "string"},
                        "reason": {"type": "string"}}},
                    "intervals": {"type": "object", "description": "level (percent) -> [lower, upper]",
                                  "additionalProperties": {"type": "array", "items": {"type": "number"},
                                                           "minItems": 2, "maxItems": 2}}}},
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
        },
        "responses": {"Error": {"description": "error", "content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/Error"}}}}},
    },
}


@bp.get("/openapi.json")
def openapi() -> Any:
    return jsonify(OPENAPI)
