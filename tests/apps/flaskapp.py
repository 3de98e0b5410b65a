"""A small Flask application (WSGIApp / flaskapp:app), for the WSGIPreload memory measurement."""

from flask import Flask, jsonify

app = Flask(__name__)


@app.route("/")
def index():
    return "Hello from Flask"


@app.route("/json")
def as_json():
    return jsonify(framework="flask", ok=True)
