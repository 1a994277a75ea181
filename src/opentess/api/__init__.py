"""The HTTP API. Route paths name ids as ``{name:id}`` (opentess.ids.IdConvertor): registered
here, before any route module compiles its paths."""

from starlette.convertors import CONVERTOR_TYPES, register_url_convertor

from opentess.ids import IdConvertor

if "id" not in CONVERTOR_TYPES:
    register_url_convertor("id", IdConvertor())
