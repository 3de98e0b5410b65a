"""A small Flask application for the end-to-end WSGI tests (WSGIApp /flask e2e_flaskapp:app)."""

from flask import Flask, Response, jsonify, redirect, request, url_for

app = Flask(__name__)


@app.get("/")
def index():
    return "flask index"


@app.get("/user/<name>")
def user(name: str):
    return jsonify(name=name, script_root=request.script_root, path=request.path)


@app.post("/echo")
def echo():
    if request.is_json:
        return jsonify(received=request.get_json())
    return jsonify(form=request.form.to_dict(), size=request.content_length)


@app.get("/go")
def go():
    return redirect(url_for("user", name="redirected"))


@app.get("/stream")
def stream():
    return Response((f"part {i}\n" for i in range(3)), mimetype="text/plain")


@app.get("/fail")
def fail():
    raise ValueError("flask view failed on purpose")
