#!/usr/bin/env python3
"""Golden renders of chat templates, made with jinja2 exactly as transformers' apply_chat_template makes them.

Dev-time only (the product never runs Python). Writes, under Tests/Fixtures/chat-templates/:

  <model>/goldens.json   for each model directory and each cases/<case>.json:
                         {"<case>": {"prompt": "..."}} or {"<case>": {"error": "...", "raised": true|false}}
  interpreter.json       interpreter unit cases: [{"name", "template", "context", "prompt" | "error"/"raised"}]

Rendering goes through transformers itself (transformers.utils.chat_template_utils.render_jinja_template,
the function apply_chat_template calls, with its ImmutableSandboxedEnvironment(trim_blocks=True,
lstrip_blocks=True), raise_exception, namespace, dict, tojson and strftime_now), after the message
normalisation processors apply (ProcessorMixin._normalize_conversations: keys with None values dropped,
OpenAI image_url parts turned into {"type": "image", "url": ...}).

Two things transformers would take from a real tokenizer are taken from the fixture files instead, the
way flamingo-cluster's ModelChatTemplate reads them (no network access to the Hugging Face hub here):
the template (processor_config.json, chat_template.json, chat_template.jinja, tokenizer_config.json, first
found) and the special-token variables (bos_token, eos_token, ... from tokenizer_config.json, a string or
an AddedToken object's "content"). strftime_now formats the fixed FIXED_NOW so goldens do not change
with the date; the Swift tests render with the same instant and time zone.

Setup:  python3 -m venv /tmp/ref && /tmp/ref/bin/pip install jinja2 transformers
Run:    /tmp/ref/bin/python scripts/reference/make_chat_template_goldens.py
"""
import datetime
import json
import os
import sys

import jinja2
import transformers
from transformers.processing_utils import ProcessorMixin
from transformers.utils.chat_template_utils import _compile_jinja_template, render_jinja_template

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Tests", "Fixtures", "chat-templates")
MODELS = ["idefics2-8b", "llama-3.2-11b-vision-instruct", "idefics-instruct-builtin"]
SPECIAL_TOKENS = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]
# 2024-09-25 12:00 UTC (the Swift tests use the same instant, in UTC).
FIXED_NOW = datetime.datetime(2024, 9, 25, 12, 0, 0, tzinfo=datetime.timezone.utc)


def load_template(directory):
    for name in ["processor_config.json", "chat_template.json"]:
        path = os.path.join(directory, name)
        if os.path.exists(path):
            template = json.load(open(path, encoding="utf-8")).get("chat_template")
            if template is not None:
                return template
    path = os.path.join(directory, "chat_template.jinja")
    if os.path.exists(path):
        return open(path, encoding="utf-8", newline="").read()
    template = json.load(open(os.path.join(directory, "tokenizer_config.json"), encoding="utf-8")).get("chat_template")
    if isinstance(template, list):
        template = {t["name"]: t["template"] for t in template}["default"]
    return template


def special_tokens(directory):
    found = {}
    for name in ["special_tokens_map.json", "tokenizer_config.json"]:
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            continue
        config = json.load(open(path, encoding="utf-8"))
        for key in SPECIAL_TOKENS:
            value = config.get(key)
            if isinstance(value, str):
                found[key] = value
            elif isinstance(value, dict) and isinstance(value.get("content"), str):
                found[key] = value["content"]
    return {k: found[k] for k in SPECIAL_TOKENS if k in found}


def render(template, messages, add_generation_prompt, tokens):
    compiled = _compile_jinja_template(template)
    compiled.environment.globals["strftime_now"] = lambda fmt: FIXED_NOW.strftime(fmt)
    conversations, _ = ProcessorMixin._normalize_conversations(None, messages)
    try:
        rendered, _ = render_jinja_template(
            conversations=conversations, chat_template=template, add_generation_prompt=add_generation_prompt, **tokens
        )
        return {"prompt": rendered[0]}
    except jinja2.exceptions.TemplateError as e:
        # raise_exception raises a bare TemplateError; UndefinedError, TemplateRuntimeError, ... are subclasses.
        return {"error": str(e), "raised": type(e) is jinja2.exceptions.TemplateError}
    except Exception as e:  # TypeError and friends from Python itself
        return {"error": f"{type(e).__name__}: {e}", "raised": False}


def model_goldens():
    cases_dir = os.path.join(ROOT, "cases")
    cases = sorted(f[:-5] for f in os.listdir(cases_dir) if f.endswith(".json"))
    for model in MODELS:
        directory = os.path.join(ROOT, model)
        template, tokens = load_template(directory), special_tokens(directory)
        goldens = {}
        for case in cases:
            spec = json.load(open(os.path.join(cases_dir, case + ".json"), encoding="utf-8"))
            goldens[case] = render(template, spec["messages"], spec.get("add_generation_prompt", True), tokens)
        write(os.path.join(directory, "goldens.json"), goldens)
        print(f"{model}: {len(goldens)} cases")


# Interpreter cases: (name, template, context). Each is rendered by jinja2 the same way (transformers'
# environment), with no other variables than the context.
INTERPRETER_CASES = [
    # whitespace control, trim_blocks, lstrip_blocks
    ("trim-blocks", "{% if true %}\nyes\n{% endif %}\nend", {}),
    ("lstrip-blocks", "  {% if true %}\n  x\n  {% endif %}\n  y {{ 1 }}  {% if 1 %}z{% endif %}\n", {}),
    ("strip-markers", "a  \n  {%- if true -%}  \n  b  \n  {%- endif -%}  \n  c", {}),
    ("variable-strip", "a  {{- 'b' -}}  c {{ 'd' }} e", {}),
    ("plus-keeps-whitespace", "  {%+ if true %}\nq{% endif +%}\nw", {}),
    ("comments", "{# c #}\n  {#- d #}\na{#+ e +#}\nb {# multi\nline #}c", {}),
    ("newlines-normalised", "a\r\nb\rc\n", {}),
    ("minus-is-strip-not-negation", "{{- 1 }}|{{ -1 }}", {}),
    ("trailing-newline-dropped-once", "x\n\n", {}),
    # loops
    ("loop-variables", "{% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}"
     "{{ loop.first }}{{ loop.last }}{{ loop.length }}[{{ loop.previtem }}|{{ loop.nextitem }}];{% endfor %}", {"xs": ["a", "b", "c"]}),
    ("loop-filter-and-else", "{% for x in xs if x is even %}{{ loop.index }}/{{ loop.length }}:{{ x }} {% else %}none{% endfor %}"
     "{% for x in [] %}x{% else %}empty{% set inside = 1 %}{% endfor %}[{{ inside }}]", {"xs": [1, 2, 3, 4]}),
    ("loop-scoping", "{% set y = 1 %}{% for x in [1, 2] %}{% if loop.first %}{% set z = 5 %}{% endif %}[{{ z }}]"
     "{% set y = y + x %}{{ y }}{% endfor %}{{ y }}", {}),
    ("loop-over-dict-string-undefined", "{% for k in d %}{{ k }}{% endfor %}|{% for c in 'abc' %}{{ c }}-{% endfor %}|"
     "{% for x in missing %}x{% else %}u{% endfor %}", {"d": {"b": 1, "a": 2}}),
    ("loop-unpacking", "{% for k, v in d.items() %}{{ k }}={{ v }} {% endfor %}{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}",
     {"d": {"x": 1, "y": [2]}}),
    ("loop-controls", "{% for x in range(6) %}{% if x == 1 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}", {}),
    ("nested-loops", "{% for m in ms %}{% for c in m.content %}{{ loop.index }}{{ c.type }}{% endfor %};{{ loop.index }}{% endfor %}",
     {"ms": [{"content": [{"type": "a"}, {"type": "b"}]}, {"content": [{"type": "c"}]}]}),
    # namespace and set
    ("namespace", "{% set ns = namespace(found=false, n=0) %}{% for m in ms %}{% if m.role == 'system' %}{% set ns.found = true %}"
     "{% endif %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.found }} {{ ns.n }} {{ ns.missing }}|{{ ns['n'] }}",
     {"ms": [{"role": "user"}, {"role": "system"}]}),
    ("set-forms", "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t = 3, %}{{ t }}{% set block | upper %} x {{ a }} {% endset %}[{{ block }}]"
     "{% set messages = messages[1:] %}{{ messages | length }}", {"messages": [1, 2, 3]}),
    # if / elif / else
    ("elif-chain", "{% for x in [1, 2, 3, 4] %}{% if x == 1 %}one{% elif x == 2 %}two{% elif x == 3 %}three{% else %}other{% endif %} {% endfor %}", {}),
    ("conditional-expression", "{{ 'y' if true else 'n' }}{{ 'y' if false else 'n' }}[{{ 'y' if false }}]", {}),
    # undefined (Jinja's default Undefined)
    ("undefined", "[{{ missing }}][{{ d.nope }}][{{ d['nope'] }}][{{ l[5] }}]{{ missing is defined }}{{ missing is undefined }}"
     "{{ d.a is defined }}{{ missing | length }}{{ missing | default('dflt') }}{{ missing ~ 'cat' }}{% if missing %}t{% else %}f{% endif %}"
     "{{ missing == missing }}{{ 'a' in missing }}{{ missing | trim }}|{{ missing is iterable }}", {"d": {"a": 1}, "l": [1]}),
    ("none-and-bools", "{{ none }} {{ None }} {{ true }} {{ False }} {{ x }} {{ x is none }} {{ 0 is none }} {{ true is boolean }}",
     {"x": None}),
    # literals and printing (Python's str/repr)
    ("printing", "{{ [1, 'a', none, true, 1.5] }} {{ {'k': 'v', 'n': [1]} }} {{ (1, 2) }} {{ (1,) }} {{ \"it's\" }} {{ ['it\\'s', 'a\"b', 'x\\ny'] }}", {}),
    ("numbers", "{{ 1 / 2 }} {{ 4 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 1e3 }} "
     "{{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1e-5 }} {{ 3.0 * 2 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ 1_000 }} {{ 0x1F }} {{ true + 1 }} {{ -x }} {{ f }}",
     {"x": 3, "f": 2.5}),
    ("string-escapes", "{{ 'a\\tb\\\\c\\x41\\u00e9\\101' }}|{{ \"q\\\"q\" }}|{{ 'adjacent' ' literals' }}", {}),
    # operators
    ("concat-and-plus", "{{ 'a' ~ 1 ~ none ~ true }} {{ 'a' + 'b' }} {{ [1] + [2] }} {{ 'ab' * 2 }} {{ [0] * 3 }}", {}),
    ("comparisons", "{{ 1 == 1.0 }} {{ 1 == true }} {{ 'a' != 'b' }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} "
     "{{ [1] == [1] }} {{ {'a': 1} == {'a': 1} }} {{ none == none }} {{ 2 >= 2 }} {{ 1 <= 0 }}", {}),
    ("membership", "{{ 'at' in 'cat' }} {{ 1 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 'z' not in 'cat' }} {{ 3 not in [1] }} {{ 'role' in m }}",
     {"m": {"role": "user"}}),
    ("boolean-operators", "{{ true and 'x' }} {{ 0 or 'y' }} {{ not [] }} {{ '' or none }} {{ not 1 and 2 }} {{ (1 or 2) and 3 }}", {}),
    # access
    ("subscripts-and-slices", "{{ l[0] }}{{ l[-1] }}{{ l[1:] }}{{ l[:-1] }}{{ l[::2] }}{{ l[::-1] }}{{ s[1] }}{{ s[1:3] }}{{ s[::-1] }}"
     "{{ d['k'] }}{{ d.k }}{{ d.n.m }}{{ l.0 }}", {"l": [1, 2, 3], "s": "hello", "d": {"k": "v", "n": {"m": "deep"}}}),
    ("message-content-shapes", "{% for m in messages %}{% if m.content is string %}S:{{ m.content }}{% else %}"
     "{% for p in m.content %}{% if p.type == 'image' %}<image>{% elif p.type == 'text' %}{{ p.text }}{% endif %}{% endfor %}{% endif %};{% endfor %}",
     {"messages": [{"content": "plain"}, {"content": [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}]}]}),
    # filters
    ("filters-text", "[{{ '  x y  ' | trim }}][{{ 'xxaxx' | trim('x') }}]{{ 'aBc' | upper }}{{ 'aBc' | lower }}{{ 'hELLO wORLD' | capitalize }} "
     "{{ 'a-b c(d' | title }} {{ 5 | string + 'a' }} {{ 'abc' | replace('b', 'B') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ 'abc' | reverse }}", {}),
    ("filters-sequences", "{{ [1, 2] | length }} {{ 'abc' | count }} {{ d | length }} {{ [1, 2, 3] | first }} {{ 'abc' | last }} "
     "{{ [1, 2] | join(', ') }} {{ ms | join('|', attribute='role') }} {{ 'ab' | list }} {{ d | list }} {{ d | items | list }} "
     "{{ [1, 2] | reverse | list }} {{ [] | first }}", {"d": {"b": 1, "a": 2}, "ms": [{"role": "user"}, {"role": "assistant"}]}),
    ("filters-default", "{{ 3 | default(4) }} {{ missing | default('d') }} {{ '' | default('e', true) }} {{ '' | default('e') }} "
     "{{ none | default('f') }} {{ missing | d('g') }} {{ 0 | default(boolean=true, default_value='h') }}", {}),
    ("filters-numbers", "{{ ' 42 ' | int }} {{ '4.7' | int }} {{ 'x' | int }} {{ 4.7 | int }} {{ 'x' | int(7) }} {{ '1e3' | float }} "
     "{{ 'a' | float }} {{ 3 | float }} {{ -3 | abs }} {{ true | int }}", {}),
    ("filters-select-map", "{{ ms | selectattr('role', 'equalto', 'user') | list | length }} {{ ms | rejectattr('role', 'equalto', 'user') | map(attribute='role') | list }} "
     "{{ [1, 2, 3, 4] | select('odd') | list }} {{ [0, 1, '', 'a'] | select | list }} {{ ['a', 'B'] | map('upper') | join }} "
     "{{ ms | selectattr('extra') | list }}",
     {"ms": [{"role": "user"}, {"role": "assistant", "extra": True}, {"role": "user"}]}),
    ("tojson", "{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}|"
     "{{ [1, 2] | tojson(separators=(',', ':')) }}|{{ 'é' | tojson(ensure_ascii=true) }}|{{ [] | tojson(indent=4) }}",
     {"x": {"a": [1, "é \"q\" <>&\n", None, True, 1.5, {}], "b": "tab\there"}}),
    # tests
    ("tests", "{{ 'a' is string }} {{ 1 is string }} {{ {} is mapping }} {{ [] is mapping }} {{ [] is iterable }} {{ 1 is iterable }} "
     "{{ 'a' is sequence }} {{ 1 is number }} {{ 1.5 is float }} {{ 1 is integer }} {{ true is integer }} {{ 3 is odd }} {{ 4 is even }} "
     "{{ 9 is divisibleby 3 }} {{ 9 is divisibleby(4) }} {{ 'ab' is lower }} {{ 'AB' is upper }} {{ 1 is in [1] }} {{ 'a' is eq 'a' }} "
     "{{ 2 is gt 1 }} {{ none is sameas none }} {{ x is not none }} {{ raise_exception is callable }} {{ strftime_now is defined }}",
     {"x": 1}),
    # methods
    ("string-methods", "[{{ ' x '.strip() }}][{{ 'xxaxx'.lstrip('x') }}][{{ 'xxaxx'.rstrip('x') }}]{{ 'abc'.startswith('a') }}{{ 'abc'.endswith(('x', 'c')) }}"
     "{{ 'abc'.upper() }}{{ 'ABC'.lower() }} {{ \"they're bill's\".title() }} {{ 'aBC'.capitalize() }} {{ '  a b  '.split() }} "
     "{{ 'a,b,,c'.split(',') }} {{ 'a b c'.split(' ', 1) }} {{ 'abc'.replace('b', 'B') }} {{ ', '.join(['x', 'y']) }} {{ 'hello'.find('l') }} "
     "{{ 'hello'.count('l') }}", {}),
    # searching strings by Unicode scalar (multi-byte text, repeated and overlapping patterns)
    ("string-search", "{{ 'h\u00e9ll\u00e9 w\u00f6rld'.find('\u00f6') }} {{ 'aaaa'.count('aa') }} {{ 'abababa'.count('aba') }} "
     "{{ 'aaa'.replace('aa', 'b') }} {{ 'abababa'.replace('aba', '-') }} {{ 'x\u00e9y\u00e9z'.split('\u00e9') }} "
     "{{ 'ab'.replace('', '.') }} {{ 'abc'.replace('', '-', 2) }} {{ '\U0001f600a\U0001f600'.find('a') }} {{ 'aab' in 'aaab' }} "
     "{{ 'abcabd'.find('abd') }} {{ 'a,b,c'.split(',', 1) }} {{ ''.count('x') }} {{ 'abc'.count('') }} {{ 'aaa' | replace('aa', 'b') }}", {}),
    ("namespace-holding-itself", "{% set ns = namespace(a=1) %}{% set ns.me = ns %}{{ ns }} {{ ns.me.me.a }}", {}),
    ("dict-methods", "{{ d.keys() | list }} {{ d.values() | list }} {{ d.items() | list }} {{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 'dflt') }}",
     {"d": {"a": 1, "b": "two"}}),
    # functions
    ("functions", "{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ dict(a=1, b='x') }} {{ namespace(v=2).v }} {{ strftime_now('%d %b %Y') }} "
     "{{ strftime_now('%A %B %j %H:%M:%S %p %y') }}", {}),
    ("generation-tag", "a{% generation %}b{{ 1 }}{% endgeneration %}c", {}),
    ("print-statement", "{% print 'p' ~ 1 %}", {}),
    # errors at render time
    ("raise-exception", "{% if x %}{{ raise_exception('Roles must alternate: ' ~ x) }}{% endif %}", {"x": "user"}),
    ("undefined-attribute-error", "{{ missing.attr }}", {}),
    ("type-error", "{{ 'a' + 1 }}", {}),
    ("none-not-iterable", "{% for x in none %}{% endfor %}", {}),
    ("non-namespace-assignment", "{% set d.x = 1 %}", {"d": {}}),
]


def interpreter_goldens():
    out = []
    for name, template, context in INTERPRETER_CASES:
        compiled = _compile_jinja_template(template)
        compiled.environment.globals["strftime_now"] = lambda fmt: FIXED_NOW.strftime(fmt)
        entry = {"name": name, "template": template, "context": context}
        try:
            entry["prompt"] = compiled.render(**context)
        except jinja2.exceptions.TemplateError as e:
            entry["error"], entry["raised"] = str(e), type(e) is jinja2.exceptions.TemplateError
        except Exception as e:
            entry["error"], entry["raised"] = f"{type(e).__name__}: {e}", False
        out.append(entry)
    write(os.path.join(ROOT, "interpreter.json"), out)
    print(f"interpreter: {len(out)} cases")


def write(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    print(f"jinja2 {jinja2.__version__}, transformers {transformers.__version__}", file=sys.stderr)
    model_goldens()
    interpreter_goldens()
