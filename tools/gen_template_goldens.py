#!/usr/bin/env python3
"""Golden renders of the chat templates in ../shared/templates.

Renders every *.jinja template against a fixed set of conversations with
Python's jinja2 set up the way Hugging Face transformers'
apply_chat_template sets it up (ImmutableSandboxedEnvironment with
trim_blocks=True, lstrip_blocks=True, the loopcontrols extension, a tojson
filter that is json.dumps with ensure_ascii=False and no HTML escaping,
raise_exception and strftime_now globals). Differences from transformers,
chosen for determinism and to match what our server passes:
  - strftime_now formats a fixed date, 26 Jul 2024 (the date Llama 3.1's
    template falls back to), not the current one;
  - `tools` and `documents` are left undefined rather than None.

Also renders tests/tokenizer/templates/extra/*.jinja the same way.

Writes, under tests/tokenizer/templates/:
  cases.json                 the conversations (for people)
  cases.txt                  the same for the C test (hex-encoded strings)
  <template>.<case>.golden   the rendered text, or
  <template>.<case>.error    the raise_exception message when it raised

Run from the repository root: python3 tools/gen_template_goldens.py
"""
import datetime
import glob
import json
import os
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATES = "../shared/templates"
OUT = "tests/tokenizer/templates"
# our own templates: reconstructions of other families' formats and
# feature-heavy templates that exercise the interpreter
EXTRA = "tests/tokenizer/templates/extra"
BOS = "<BOS>"
EOS = "<EOS>"
TODAY = datetime.datetime(2024, 7, 26, 12, 0, 0)

CASES = [
    ("sys_user", True, [("system", "You are a helpful assistant."), ("user", "Hello!")]),
    ("user", True, [("user", "What is 2+2?")]),
    ("user_nogen", False, [("user", "What is 2+2?")]),
    ("multi", True, [("user", "Hi"), ("assistant", "Hello! How can I help?"), ("user", "Tell me a joke.")]),
    ("multi_sys_nogen", False, [("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello."),
                                ("user", "Bye"), ("assistant", "Goodbye.")]),
    ("unicode", True, [("user", "h\u00e9llo \u4e16\u754c \U0001f389 caf\u00e9\u00a0"),
                       ("assistant", "\u3053\u3093\u306b\u3061\u306f \u2014 \u00fc\u00f1\u00ee\u00e7\u00f8d\u00e9"),
                       ("user", "\u3000\u0645\u0631\u062d\u0628\u0627\n")]),
    ("jinja_text", True, [("system", "Use {{x}} and {% if y %}z{% endif %} literally."),
                          ("user", "What does {{ messages }} print? {# not a comment #} '\"\\n")]),
    ("think", True, [("user", "Why is the sky blue?"),
                     ("assistant", "<think>\nRayleigh scattering.\n</think>\n\nBecause of Rayleigh scattering."),
                     ("user", "And sunsets?")]),
    ("think_last", False, [("user", "2+2?"), ("assistant", "<think>\nsimple\n</think>\n\n4")]),
    ("whitespace", True, [("system", "  padded system  \n"), ("user", "\n\n  padded user\t \n"),
                          ("assistant", "  padded reply  "), ("user", " x ")]),
    ("empty_content", True, [("system", ""), ("user", "")]),
    ("sys_only", True, [("system", "Only a system prompt.")]),
    ("no_messages", True, []),
    ("two_users", True, [("user", "first"), ("user", "second")]),
    ("assistant_first", True, [("assistant", "I start."), ("user", "ok")]),
    ("tool_result", True, [("user", "Weather in Paris?"), ("assistant", "Let me check."),
                           ("tool", "{\"temp\": 20, \"unit\": \"C\"}"), ("tool", "second result"),
                           ("assistant", "It is 20 C."), ("user", "Thanks")]),
    ("long", False, [("system", "S")] + [(("user", "assistant")[i % 2], f"turn {i} <tag> & \"q\"")
                                          for i in range(9)]),
]


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def strftime_now(fmt):
    return TODAY.strftime(fmt)


def make_env():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                       extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in glob.glob(os.path.join(OUT, "*.golden")) + glob.glob(os.path.join(OUT, "*.error")):
        os.remove(f)
    env = make_env()
    with open(os.path.join(OUT, "cases.json"), "w", encoding="utf-8") as fp:
        json.dump([{"name": n, "add_generation_prompt": g,
                    "messages": [{"role": r, "content": c} for r, c in msgs]}
                   for n, g, msgs in CASES], fp, ensure_ascii=False, indent=1)
        fp.write("\n")
    with open(os.path.join(OUT, "cases.txt"), "w", encoding="ascii") as fp:
        fp.write("# case <name> <add_generation_prompt>; msg <role> <hex content>; end\n")
        for n, g, msgs in CASES:
            fp.write(f"case {n} {int(g)}\n")
            for r, c in msgs:
                fp.write(f"msg {r} {c.encode('utf-8').hex()}\n")
            fp.write("end\n")
    count = 0
    paths = sorted(glob.glob(os.path.join(TEMPLATES, "*.jinja")))
    paths += sorted(glob.glob(os.path.join(EXTRA, "*.jinja")))
    for path in paths:
        name = os.path.basename(path)[: -len(".jinja")]
        with open(path, encoding="utf-8") as fp:
            tmpl = env.from_string(fp.read())
        for n, g, msgs in CASES:
            messages = [{"role": r, "content": c} for r, c in msgs]
            base = os.path.join(OUT, f"{name}.{n}")
            try:
                text = tmpl.render(messages=messages, add_generation_prompt=g,
                                   bos_token=BOS, eos_token=EOS)
                with open(base + ".golden", "wb") as fp:
                    fp.write(text.encode("utf-8"))
            except jinja2.exceptions.TemplateError as e:
                with open(base + ".error", "wb") as fp:
                    fp.write(str(e).encode("utf-8"))
            count += 1
    print(f"{count} renders written to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
