"""The documentation covers every configuration key the loader accepts.

The keys come from the source: every table of accepted keys in gateway/ and
filters/ (`static const char *const keys[] = {"...", ..., NULL};`, the list
handed to config_check_keys) is found by scanning the C files. Each table is
mapped to the object of config/sluice.schema.json it describes, and must
name exactly that object's properties (so the schema lists every key, and
nothing the loader refuses). Then every key must have a row in its section
of docs/configuration.md (with a type and a default) or docs/filters.md,
and appear in a JSON example there; and every key, command-line option and
filter type must appear in the man pages, which must render without a
warning. A new key table in the source fails until it is mapped here.
"""
import json
import re
import subprocess

import pytest

from conftest import REPO, run_sluice

SCHEMA = json.loads((REPO / "config" / "sluice.schema.json").read_text())
CONFIGURATION_MD = REPO / "docs" / "configuration.md"
FILTERS_MD = REPO / "docs" / "filters.md"
MAN1 = REPO / "man" / "sluice.1"
MAN5 = REPO / "man" / "sluice.json.5"

TABLE_RE = re.compile(r"static const char \*const (\w+)\[\] = \{(.*?)\};", re.S)
FUNCTION_RE = re.compile(r"^[A-Za-z_][\w \t\*]*?\b(\w+)\([^;]*$", re.M)

# (file, function holding the table) -> (schema location, document, heading).
# A schema location is a JSON pointer, or "filter:TYPE[/pointer]" for the
# options of one filter type. Headings are the section's own title.
CONFIG = "configuration"
FILTERS = "filters"
TABLES = {
    ("gateway/conf/config.c", "build"): ("", CONFIG, "Top level"),
    ("gateway/conf/config_listen.c", "build_listener"): ("/$defs/listener", CONFIG, "Listeners"),
    ("gateway/net/tls.c", "tls_server_build"):
        ("/$defs/listener/properties/tls", CONFIG, "Listener `tls`"),
    ("gateway/net/tls.c", "load_cert"):
        ("/$defs/listener/properties/tls/properties/certificates/items", CONFIG, "Listener `tls`"),
    ("gateway/conf/config_upstreams.c", "build_upstream"): ("/$defs/upstream", CONFIG, "Upstreams"),
    ("gateway/conf/config_upstreams.c", "build_target"): ("/$defs/target/oneOf/1", CONFIG, "Targets"),
    ("gateway/conf/config_upstreams.c", "build_health"):
        ("/$defs/upstream/properties/health_check", CONFIG, "`health_check`"),
    ("gateway/net/tls.c", "tls_client_build"):
        ("/$defs/upstream/properties/tls", CONFIG, "Upstream `tls`"),
    ("gateway/conf/config_routes.c", "build_route"): ("/$defs/route", CONFIG, "Routes"),
    ("gateway/conf/config_routes.c", "build_match"): ("/$defs/match", CONFIG, "`match`"),
    ("gateway/conf/config_routes.c", "build_match_values"):
        ("/$defs/match_values/additionalProperties/oneOf/1", CONFIG, "`match`"),
    ("gateway/conf/config_routes.c", "build_respond"):
        ("/$defs/route/properties/respond", CONFIG, "`respond`"),
    ("gateway/conf/config_routes.c", "build_redirect"):
        ("/$defs/route/properties/redirect", CONFIG, "`redirect`"),
    ("gateway/conf/config_limits.c", "config_build_admin"): ("/properties/admin", CONFIG, "Admin"),
    ("gateway/conf/config_limits.c", "config_build_access_log"):
        ("/properties/access_log", CONFIG, "Access log"),
    ("gateway/conf/config_limits.c", "config_build_limits"): ("/$defs/limits", CONFIG, "Limits"),
    ("gateway/conf/config_limits.c", "config_build_redis"): ("/properties/redis", CONFIG, "Redis"),
    ("filters/api_key.c", "api_key_create"): ("filter:api_key", FILTERS, "api_key"),
    ("filters/basic_auth.c", "basic_auth_create"): ("filter:basic_auth", FILTERS, "basic_auth"),
    ("filters/jwt.c", "jwt_create"): ("filter:jwt", FILTERS, "jwt"),
    ("filters/rate_limit.c", "rate_limit_create"): ("filter:rate_limit", FILTERS, "rate_limit"),
    ("filters/rewrite.c", "rewrite_create"): ("filter:rewrite", FILTERS, "rewrite"),
    ("filters/rewrite.c", "parse_path"): ("filter:rewrite/properties/path", FILTERS, "rewrite"),
    ("filters/headers.c", "headers_create"): ("filter:headers", FILTERS, "headers"),
    ("filters/headers.c", "parse_changes"): ("/$defs/header_changes", FILTERS, "headers"),
    ("filters/cors.c", "cors_create"): ("filter:cors", FILTERS, "cors"),
    ("filters/ip_filter.c", "ip_filter_create"): ("filter:ip_filter", FILTERS, "ip_filter"),
    ("filters/body_limit.c", "body_limit_create"): ("filter:body_limit", FILTERS, "body_limit"),
}


def source_tables():
    """{(file, function): [keys]} for every list of accepted keys in gateway/ and filters/."""
    found = {}
    files = sorted(REPO.glob("gateway/**/*.c")) + sorted(REPO.glob("filters/*.c"))
    for path in files:
        text = path.read_text()
        for m in TABLE_RE.finditer(text):
            items = re.findall(r'"([^"]*)"|\bNULL\b', m.group(2))
            keys = [k for k in items if k]
            if not re.search(r"\bNULL\s*$", m.group(2).strip()):
                continue  # not a NULL-terminated key list
            functions = FUNCTION_RE.findall(text[:m.start()])
            assert functions, f"{path}: key table {m.group(1)} outside a function"
            # Only the lists given to config_check_keys*() in the same function.
            after = FUNCTION_RE.search(text, m.end())
            body = text[m.end():after.start() if after else len(text)]
            if not re.search(rf"config_check_keys(_strict)?\([^;]*\b{m.group(1)}\s*\)", body):
                continue
            rel = str(path.relative_to(REPO))
            found.setdefault((rel, functions[-1]), []).extend(keys)
    return found


def resolve(node):
    while "$ref" in node:
        node = pointer(node["$ref"][1:])
    return node


def pointer(ptr, root=SCHEMA):
    node = root
    for part in [p for p in ptr.split("/") if p]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def filter_options(type_name):
    for rule in SCHEMA["$defs"]["filter"]["allOf"]:
        if rule["if"]["properties"]["type"]["const"] == type_name:
            return resolve(rule["then"])
    raise AssertionError(f"the schema has no options for filter type {type_name}")


def schema_object(location):
    if location.startswith("filter:"):
        type_name, _, rest = location[len("filter:"):].partition("/")
        node = filter_options(type_name)
        return resolve(pointer(rest, node)) if rest else node
    return resolve(pointer(location))


def schema_keys(location):
    return set(schema_object(location).get("properties", {})) - {"type"}


def section(document, heading, level=None):
    """The text under `heading` up to the next heading (of `level` or higher if given)."""
    lines = document.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(#+) (.*)$", line)
        if m and m.group(2).strip() == heading:
            own = len(m.group(1))
            stop = own if level is None else level
            out = []
            for rest in lines[i + 1:]:
                h = re.match(r"^(#+) ", rest)
                if h and (len(h.group(1)) <= stop if level is not None else True):
                    break
                out.append(rest)
            return "\n".join(out)
    raise AssertionError(f"no section {heading!r}")


def enclosing_section(document, heading):
    """The level-2 section that holds `heading`, subsections included."""
    current = None
    for line in document.splitlines():
        m = re.match(r"^(#+) (.*)$", line)
        if m and len(m.group(1)) <= 2:
            current = m.group(2).strip()
        if m and m.group(2).strip() == heading:
            return section(document, current, level=2)
    raise AssertionError(f"no section {heading!r}")


def json_examples(text):
    return "\n".join(re.findall(r"```json\n(.*?)```", text, re.S))


def table_row(text, key):
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells and cells[0] == f"`{key}`":
            return cells
    return None


def documents():
    return {CONFIG: CONFIGURATION_MD.read_text(), FILTERS: FILTERS_MD.read_text()}


def test_every_key_table_in_the_source_is_mapped():
    found = source_tables()
    assert len(found) >= len(TABLES) - 1, found.keys()
    unmapped = sorted(set(found) - set(TABLES))
    assert not unmapped, f"new key tables: map them in TABLES to the schema and docs: {unmapped}"
    missing = sorted(set(TABLES) - set(found))
    assert not missing, f"TABLES names key tables the source no longer has: {missing}"


@pytest.mark.parametrize("where", sorted(TABLES), ids=[f"{f}:{fn}" for f, fn in sorted(TABLES)])
def test_schema_lists_exactly_the_keys_the_loader_accepts(where):
    keys = set(source_tables()[where]) - {"type"}
    location = TABLES[where][0]
    assert keys == schema_keys(location), (
        f"{where}: loader only {sorted(keys - schema_keys(location))}, "
        f"schema only {sorted(schema_keys(location) - keys)}")


def test_schema_filter_types_are_the_registry():
    text = (REPO / "filters" / "registry.c").read_text()
    available = [n for n in re.findall(r"\bFILTER_AVAILABLE\(([a-z_0-9]+)\)", text) if n != "name"]
    assert len(available) >= 9, available
    enum = SCHEMA["$defs"]["filter"]["properties"]["type"]["enum"]
    assert sorted(enum) == sorted(available)
    headings = re.findall(r"^## (\w+)$", FILTERS_MD.read_text(), re.M)
    for name in available:
        assert name in headings, f"docs/filters.md has no section for the {name} filter"
        filter_options(name)


@pytest.mark.parametrize("where", sorted(TABLES), ids=[f"{f}:{fn}" for f, fn in sorted(TABLES)])
def test_every_key_is_documented_with_an_example(where):
    location, doc, heading = TABLES[where]
    text = documents()[doc]
    # A filter's options may sit under a subsection ("### Options").
    own = section(text, heading) if doc == CONFIG else enclosing_section(text, heading)
    examples = json_examples(enclosing_section(text, heading))
    for key in sorted(schema_keys(location)):
        row = table_row(own, key)
        assert row, f"docs/{doc}.md, section {heading!r}: no table row for `{key}`"
        if doc == CONFIG:
            assert len(row) >= 4 and row[1] and row[2], (
                f"docs/{doc}.md, {heading!r}: `{key}` needs a type and a default: {row}")
        assert f'"{key}"' in examples, (
            f"docs/{doc}.md, section {heading!r}: `{key}` appears in no JSON example")


def test_documented_examples_are_valid_json():
    for name, text in documents().items():
        for block in re.findall(r"```json\n(.*?)```", text, re.S):
            try:
                json.loads(block)
            except json.JSONDecodeError:
                json.loads("{" + block + "}")  # a member shown on its own: "key": {...}


def test_the_top_level_example_is_a_valid_configuration(tmp_path):
    example = json.loads(json_examples(section(CONFIGURATION_MD.read_text(), "Top level")))
    (tmp_path / "sluice.json").write_text(json.dumps(example))
    p = run_sluice(["-t", "-c", "sluice.json"], tmp_path)
    assert p.returncode == 0, p.stderr.decode()


def man_text(path):
    """The page's words: roff escapes for '-' and font changes removed."""
    text = path.read_text()
    text = text.replace("\\-", "-").replace("\\(em", "-").replace("\\e", "\\")
    return re.sub(r"\\f[BIRP]", "", text)


def test_man_page_sluice_1_names_every_option():
    p = run_sluice(["-h"], REPO)
    assert p.returncode == 0
    options = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", p.stdout.decode()))
    assert {"-c", "-t", "-V", "-h", "--config", "--test", "--version", "--help"} <= options
    page = man_text(MAN1)
    for option in sorted(options):
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", page), (
            f"man/sluice.1 does not mention {option}")
    for word in ("SIGHUP", "SIGTERM", "SIGINT", "EXIT STATUS", "SLUICE_CONFIG", "sluice.json"):
        assert word in page, f"man/sluice.1 does not mention {word}"


def test_man_page_sluice_json_5_names_every_key_and_filter():
    page = man_text(MAN5)
    for where, (location, _, _) in sorted(TABLES.items()):
        for key in sorted(schema_keys(location)):
            assert re.search(rf"(?<![\w$]){re.escape(key)}(?!\w)", page), (
                f"man/sluice.json.5 does not mention {key} ({where})")
    for name in SCHEMA["$defs"]["filter"]["properties"]["type"]["enum"]:
        assert name in page, f"man/sluice.json.5 does not mention the {name} filter"


@pytest.mark.parametrize("page", [MAN1, MAN5], ids=["sluice.1", "sluice.json.5"])
def test_man_pages_render_without_warnings(page):
    p = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    title = page.read_text().split(".TH ", 1)
    assert len(title) == 2 and title[1].startswith(page.stem.upper().split(".")[0]), title[:1]


def test_readme_links_the_documentation():
    readme = (REPO / "README.md").read_text()
    for target in ("docs/configuration.md", "docs/operations.md", "docs/filters.md",
                   "docs/websocket.md", "man/sluice.1", "man/sluice.json.5"):
        assert f"]({target})" in readme, f"README.md does not link {target}"
        assert (REPO / target).exists()
    assert "SPEC.md" not in readme and "ARCHITECTURE.md" not in readme
    assert '"$schema"' in readme and "json.schemas" in readme, "README shows how to bind the schema"
