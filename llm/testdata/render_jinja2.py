"""Render chat templates with Python's jinja2 as Hugging Face's transformers
does (apply_chat_template's environment), for llm's TestJinjaMatchesPython.

stdin: {"now": "YYYY-MM-DDTHH:MM:SS", "cases": [{"template": src, "context": {...}}]}
stdout: [{"out": rendered} or {"error": message}, ...], one per case.
"""

import json
import sys
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment


def main():
    req = json.load(sys.stdin)
    now = datetime.fromisoformat(req["now"])

    def raise_exception(message):
        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # transformers' own tojson: no HTML escaping, keys in order.
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return now.strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now

    out = []
    for case in req["cases"]:
        try:
            out.append({"out": env.from_string(case["template"]).render(**case["context"])})
        except Exception as e:  # the template's raise_exception, or any failure
            out.append({"error": f"{type(e).__name__}: {e}"})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
