"""Errors as OpenAI-shaped JSON: {"error": {"message", "type"}} with the status of the PanelError class."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from panel.errors import PanelError


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PanelError)
    async def _panel_error(_: Request, exc: PanelError) -> JSONResponse:
        return JSONResponse(exc.to_json(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where or 'body'}: {err.get('msg')}")
        message = "invalid request: " + "; ".join(parts)
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=400)
