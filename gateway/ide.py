"""The GraphiQL page of dev mode, served with its assets from ``gateway/graphiql/node_modules``
(installed from the committed lock by ``make``), so it works with no internet.

The page sends the API key the developer gives it: ``/graphql#key=<key>`` (what ``make run``
prints), or an ``Authorization`` header typed into GraphiQL's headers editor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

NODE_MODULES = Path(__file__).resolve().parent / "graphiql" / "node_modules"
STATIC_PREFIX = "/graphiql/static"


@dataclass(frozen=True)
class Asset:
    """A file of the page: where it is in node_modules and its content type."""

    path: str
    media_type: str


# The only files served: the UMD builds of the pinned React, ReactDOM and GraphiQL.
ASSETS = {
    "react.production.min.js": Asset("react/umd/react.production.min.js", "text/javascript"),
    "react-dom.production.min.js": Asset(
        "react-dom/umd/react-dom.production.min.js", "text/javascript"
    ),
    "graphiql.min.js": Asset("graphiql/graphiql.min.js", "text/javascript"),
    "graphiql.min.css": Asset("graphiql/graphiql.min.css", "text/css"),
}

PAGE = """<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <title>Lodestar GraphiQL</title>
    <link rel="icon" href="data:," />
    <style>
      body { height: 100%; margin: 0; width: 100%; overflow: hidden; }
      #graphiql { height: 100vh; }
    </style>
    <link rel="stylesheet" href="{static}/graphiql.min.css" />
    <script src="{static}/react.production.min.js"></script>
    <script src="{static}/react-dom.production.min.js"></script>
    <script src="{static}/graphiql.min.js"></script>
  </head>
  <body>
    <div id="graphiql">Loading...</div>
    <script>
      // The key comes from the fragment (never sent to a server by the browser): #key=lsk_...
      const fragment = new URLSearchParams(window.location.hash.slice(1));
      const key = fragment.get("key");
      const headers = key ? { Authorization: "Bearer " + key } : {};
      const url = window.location.origin + window.location.pathname;
      const subscriptionUrl = url.replace(/^http/, "ws");
      const fetcher = GraphiQL.createFetcher({
        url: url,
        headers: headers,
        subscriptionUrl: subscriptionUrl,
        wsConnectionParams: headers,
      });
      ReactDOM.createRoot(document.getElementById("graphiql")).render(
        React.createElement(GraphiQL, {
          fetcher: fetcher,
          defaultEditorToolsVisibility: true,
          isHeadersEditorEnabled: true,
          shouldPersistHeaders: false,
        }),
      );
    </script>
  </body>
</html>
""".replace("{static}", STATIC_PREFIX)


def graphiql_page() -> HTMLResponse:
    """The GraphiQL page; static HTML that runs nothing on the server."""
    return HTMLResponse(PAGE)


async def _asset(request: Request) -> Response:
    asset = ASSETS.get(request.path_params["name"])
    if asset is None:
        body = {"errors": [{"message": "no such file", "extensions": {"code": "NOT_FOUND"}}]}
        return JSONResponse(body, status_code=404)
    path = NODE_MODULES / asset.path
    if not path.is_file():
        message = "GraphiQL is not installed: run `npm ci` in gateway/graphiql (make does)"
        body = {"errors": [{"message": message, "extensions": {"code": "NOT_FOUND"}}]}
        return JSONResponse(body, status_code=404)
    return FileResponse(path, media_type=asset.media_type)


def asset_routes() -> list[Route]:
    """The route of the page's assets (dev mode only; no key, nothing but these files)."""
    return [Route(STATIC_PREFIX + "/{name}", _asset, methods=["GET", "HEAD"])]
