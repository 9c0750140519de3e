"""Reference for the API benchmark: the smallest Flask app returning constant JSON."""

from flask import Flask, jsonify


def create_app() -> Flask:
    app = Flask("minimal")

    @app.get("/predict")
    def predict():  # type: ignore[no-untyped-def]
        return jsonify({"symbol": "BTC/USD", "predicted_price": 60000.0, "horizon_seconds": 60})

    return app
