#!/usr/bin/env python3
"""Keeps the documentation honest. Run from anywhere:

    python3 tests/docs/check_docs.py [REPOSITORY_ROOT]

1. Every field of every config file is documented. The top-level messages
   are the four service configs (proto/postern/config/v1/config.proto) and
   the policy file (PolicyConfig in proto/postern/policy/v1/policy.proto).
   Every message reachable from them through message-typed fields (maps and
   lists included) has a section in docs/configuration.md: a heading whose
   first code span is the message name (`ClientTls`; `config.v1.Api` and
   `policy.v1.Api` where two packages use one name), followed by a table
   whose first column is the field name in backticks. Each field of the
   message must have a row there, no row may name a field the message does
   not have, and a row of an enum field must name every value of the enum
   (its short form: `REPORT` for RULE_MODE_REPORT), UNSPECIFIED aside.
2. Markdown links (README.md, SECURITY.md, docs/, deploy/): every relative
   target exists, and an anchor into a Markdown file names one of its
   headings (GitHub's slugs).
3. Shell blocks (```sh, ```bash, ```shell) in those files parse with
   `bash -n`, and the repository paths they name exist.
4. README.md is a front page: at most 200 lines, and its Quick start holds
   exactly one shell block with exactly two commands, both scripts of the
   repository.

Then it checks itself: a copy of docs/configuration.md without one field's
row, and a copy of the protos with a field added, must each fail.

Standard library only (Debian's python3).
"""

import os
import re
import subprocess
import sys
import tempfile

README_MAX_LINES = 200
# Every service's main.cpp loads one of these (services/*/main.cpp); the
# policy service also loads the policy file.
TOP_LEVEL = [
    "postern.config.v1.EdgeConfig",
    "postern.config.v1.BrokerConfig",
    "postern.config.v1.ConnectorConfig",
    "postern.config.v1.PolicyServiceConfig",
    "postern.policy.v1.PolicyConfig",
]
# Directories whose first path segment marks a repository path in a shell block.
REPO_DIRS = ("deploy/", "tests/", "docs/", "services/", "proto/", "cmake/", ".ci/")


# ---------------------------------------------------------------- protos

class Message:
    def __init__(self, full_name, package, file):
        self.full_name = full_name
        self.package = package
        self.file = file
        self.fields = []  # (name, type_name, label) label: "", "repeated", "map"

    @property
    def name(self):
        return self.full_name.rsplit(".", 1)[1]


class Enum:
    def __init__(self, full_name):
        self.full_name = full_name
        self.values = []

    @property
    def name(self):
        return self.full_name.rsplit(".", 1)[1]


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    out = []
    for line in text.split("\n"):
        # A // inside a string literal is rare in these files; options with
        # strings are skipped by the parser anyway.
        out.append(re.sub(r"//.*", "", line))
    return "\n".join(out)


TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[A-Za-z_][A-Za-z0-9_.]*|\d+|[{}<>;=,\[\]()]|\S')


def parse_proto(path, messages, enums):
    text = strip_comments(open(path, encoding="utf-8").read())
    tokens = TOKEN.findall(text)
    package = ""
    i = 0

    def skip_statement(j):
        depth = 0
        while j < len(tokens):
            t = tokens[j]
            if t == "{":
                depth += 1
            elif t == "}":
                depth -= 1
                if depth == 0:
                    return j + 1
            elif t == ";" and depth == 0:
                return j + 1
            j += 1
        return j

    def parse_enum(j, scope):
        name = tokens[j + 1]
        enum = Enum(scope + "." + name)
        enums[enum.full_name] = enum
        j += 3  # enum NAME {
        while tokens[j] != "}":
            if tokens[j] in ("option", "reserved"):
                j = skip_statement(j)
                continue
            enum.values.append(tokens[j])
            j = skip_statement(j)
        return j + 1

    def parse_message(j, scope):
        name = tokens[j + 1]
        msg = Message(scope + "." + name, package, path)
        messages[msg.full_name] = msg
        j += 3  # message NAME {
        while tokens[j] != "}":
            t = tokens[j]
            if t == "message":
                j = parse_message(j, msg.full_name)
            elif t == "enum":
                j = parse_enum(j, msg.full_name)
            elif t in ("option", "reserved", "extensions", "extend"):
                j = skip_statement(j)
            elif t == "oneof":
                j += 3  # oneof NAME {
                while tokens[j] != "}":
                    if tokens[j] == "option":
                        j = skip_statement(j)
                        continue
                    msg.fields.append((tokens[j + 1], tokens[j], "", msg.full_name))
                    j = skip_statement(j)
                j += 1
            elif t == "map":
                # map < K , V > name = N ;
                value_type = tokens[j + 4]
                msg.fields.append((tokens[j + 6], value_type, "map", msg.full_name))
                j = skip_statement(j)
            elif t in ("repeated", "optional", "required"):
                msg.fields.append((tokens[j + 2], tokens[j + 1], "repeated" if t == "repeated" else "",
                                   msg.full_name))
                j = skip_statement(j)
            elif t == ";":
                j += 1
            else:
                msg.fields.append((tokens[j + 1], t, "", msg.full_name))
                j = skip_statement(j)
        return j + 1

    while i < len(tokens):
        t = tokens[i]
        if t == "package":
            package = tokens[i + 1]
            i = skip_statement(i)
        elif t == "message":
            i = parse_message(i, package)
        elif t == "enum":
            i = parse_enum(i, package)
        else:
            i = skip_statement(i)


def load_protos(proto_dir):
    messages, enums = {}, {}
    for base, _, files in sorted(os.walk(proto_dir)):
        for f in sorted(files):
            if f.endswith(".proto"):
                parse_proto(os.path.join(base, f), messages, enums)
    return messages, enums


def resolve(type_name, scope, messages, enums):
    """Protobuf's scoping: innermost scope first. None for scalars and
    types from other packages (google.protobuf.Duration)."""
    if type_name.startswith("."):
        full = type_name[1:]
        return messages.get(full) or enums.get(full)
    parts = scope.split(".")
    while parts:
        full = ".".join(parts) + "." + type_name
        if full in messages:
            return messages[full]
        if full in enums:
            return enums[full]
        parts.pop()
    return messages.get(type_name) or enums.get(type_name)


def reachable(messages, enums):
    seen = {}
    todo = [messages[n] for n in TOP_LEVEL]
    while todo:
        m = todo.pop()
        if m.full_name in seen:
            continue
        seen[m.full_name] = m
        for _, type_name, _, scope in m.fields:
            t = resolve(type_name, scope, messages, enums)
            if isinstance(t, Message):
                todo.append(t)
    return seen


def enum_value_prefix(type_name):
    """As the YAML loader (services/common/config/yaml_proto.cpp) strips it:
    "RuleMode" -> "RULE_MODE_"."""
    out = ""
    for i, c in enumerate(type_name):
        if c.isupper() and i > 0:
            prev = type_name[i - 1]
            next_lower = i + 1 < len(type_name) and type_name[i + 1].islower()
            if prev.islower() or prev.isdigit() or (prev.isupper() and next_lower):
                out += "_"
        out += c.upper()
    return out + "_"


def short_values(enum):
    prefix = enum_value_prefix(enum.name)
    out = []
    for v in enum.values:
        if v.endswith("_UNSPECIFIED"):
            continue
        out.append(v[len(prefix):] if v.startswith(prefix) and len(v) > len(prefix) else v)
    return out


def doc_names(msgs):
    """The name each message's heading uses: the short name, or
    package-qualified (without "postern.") where two messages share it."""
    count = {}
    for m in msgs.values():
        count[m.name] = count.get(m.name, 0) + 1
    names = {}
    for full, m in msgs.items():
        if count[m.name] == 1:
            names[full] = m.name
        else:
            names[full] = full[len("postern."):] if full.startswith("postern.") else full
    return names


# ---------------------------------------------------------------- markdown

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")


def split_blocks(text):
    """(prose lines with fenced blocks blanked, [(lang, body, line number)])."""
    prose, blocks = [], []
    fence = None
    body, lang, start = [], "", 0
    for n, line in enumerate(text.split("\n"), 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence, lang, body, start = m.group(2), m.group(3).lower(), [], n
            prose.append("")
        elif fence is not None and line.strip().startswith(fence) and line.strip().strip(fence[0]) == "":
            blocks.append((lang, "\n".join(body), start))
            fence = None
            prose.append("")
        elif fence is not None:
            body.append(line)
            prose.append("")
        else:
            prose.append(line)
    return prose, blocks


def headings(prose):
    """[(line index, level, text)] of ATX headings outside fenced blocks."""
    out = []
    for i, line in enumerate(prose):
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if m:
            out.append((i, len(m.group(1)), m.group(2)))
    return out


def slug(text):
    """GitHub's heading anchors."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links keep their text
    text = text.lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    prose, _ = split_blocks(open(path, encoding="utf-8").read())
    seen, out = {}, set()
    for _, _, text in headings(prose):
        s = slug(text)
        if s in seen:
            seen[s] += 1
            out.add(f"{s}-{seen[s]}")
        else:
            seen[s] = 0
            out.add(s)
    return out


def table_rows(lines):
    """First cells and full text of the Markdown table rows in lines."""
    rows = []
    for line in lines:
        s = line.strip()
        if not s.startswith("|") or re.match(r"^\|[\s:|-]+\|$", s):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", s.strip("|"))]
        rows.append((cells[0], s))
    return rows


# ---------------------------------------------------------------- checks

def check_configuration(root, doc_path, proto_dir):
    messages, enums = load_protos(proto_dir)
    problems = []
    for name in TOP_LEVEL:
        if name not in messages:
            problems.append(f"{proto_dir}: no message {name} (update TOP_LEVEL in {__file__})")
    if problems:
        return problems, 0, 0
    # A service that loads another config message must be added above.
    for main in sorted(os.listdir(os.path.join(root, "services"))):
        path = os.path.join(root, "services", main, "main.cpp")
        if not os.path.exists(path):
            continue
        for ns, msg in re.findall(r"(\w+)::v1::(\w+)\s+cfg\s*;", open(path, encoding="utf-8").read()):
            if f"postern.{ns}.v1.{msg}" not in TOP_LEVEL:
                problems.append(f"services/{main}/main.cpp loads {ns}.v1.{msg}, which {__file__} does not check")

    msgs = reachable(messages, enums)
    names = doc_names(msgs)
    by_doc_name = {v: k for k, v in names.items()}

    prose, _ = split_blocks(open(doc_path, encoding="utf-8").read())
    hs = headings(prose)
    sections = {}
    shown = os.path.relpath(doc_path, root) if doc_path.startswith(root) else doc_path
    for k, (i, level, text) in enumerate(hs):
        m = re.search(r"`([^`]+)`", text)
        if not m:
            continue
        name = m.group(1)
        end = hs[k + 1][0] if k + 1 < len(hs) else len(prose)
        if name in by_doc_name:
            if name in sections:
                problems.append(f"{shown}:{i + 1}: a second section for `{name}`")
            sections[name] = (i + 1, prose[i + 1:end])
        elif re.fullmatch(r"([a-z]+\.v\d+\.)?[A-Z][A-Za-z0-9]*", name):
            problems.append(f"{shown}:{i + 1}: heading names `{name}`, which no config reaches "
                            f"(a message the configs no longer use, or a misspelling)")

    fields_checked = 0
    for full, msg in sorted(msgs.items(), key=lambda kv: kv[0]):
        dn = names[full]
        if dn not in sections:
            problems.append(f"{shown}: no section for message {full}: add a heading with `{dn}` "
                            f"and a table of its fields")
            continue
        line, body = sections[dn]
        rows = {}
        for first, text in table_rows(body):
            m = re.fullmatch(r"`([a-z_][a-z0-9_]*)`", first)
            if m:
                if m.group(1) in rows:
                    problems.append(f"{shown}:{line}: `{dn}`: field `{m.group(1)}` has two rows")
                rows[m.group(1)] = text
        proto_fields = {f[0]: f for f in msg.fields}
        for fname, type_name, _, scope in msg.fields:
            fields_checked += 1
            if fname not in rows:
                problems.append(f"{shown}:{line}: `{dn}` ({os.path.relpath(msg.file, root)}): "
                                f"field `{fname}` is not documented")
                continue
            t = resolve(type_name, scope, messages, enums)
            if isinstance(t, Enum):
                for v in short_values(t):
                    if not re.search(r"(?<![A-Za-z0-9_])" + re.escape(v) + r"(?![A-Za-z0-9_])", rows[fname],
                                     re.I):
                        problems.append(f"{shown}:{line}: `{dn}`: the row of `{fname}` does not name "
                                        f"{t.name} value `{v}`")
        for fname in rows:
            if fname not in proto_fields:
                problems.append(f"{shown}:{line}: `{dn}` documents `{fname}`, which "
                                f"{full} does not have")
    return problems, len(msgs), fields_checked


def markdown_files(root):
    out = []
    for name in ("README.md", "SECURITY.md"):
        if os.path.exists(os.path.join(root, name)):
            out.append(os.path.join(root, name))
    for top in ("docs", "deploy"):
        for base, dirs, files in os.walk(os.path.join(root, top)):
            dirs[:] = sorted(d for d in dirs if d != "node_modules" and not d.startswith("."))
            out.extend(os.path.join(base, f) for f in sorted(files) if f.endswith(".md"))
    return out


def check_links(root, files):
    problems, count = [], 0
    cache = {}
    for path in files:
        prose, _ = split_blocks(open(path, encoding="utf-8").read())
        for n, line in enumerate(prose, 1):
            line = re.sub(r"`[^`]*`", "", line)
            for target in re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", line):
                if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
                    continue  # http:, https:, mailto:
                count += 1
                file_part, _, anchor = target.partition("#")
                where = f"{os.path.relpath(path, root)}:{n}"
                dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
                if not os.path.exists(dest):
                    problems.append(f"{where}: link to {target}: {os.path.relpath(dest, root)} does not exist")
                    continue
                if anchor and dest.endswith(".md"):
                    if dest not in cache:
                        cache[dest] = anchors(dest)
                    if anchor not in cache[dest]:
                        problems.append(f"{where}: link to {target}: {os.path.relpath(dest, root)} has no "
                                        f"heading with the anchor #{anchor}")
    return problems, count


SHELL = ("sh", "bash", "shell")


def shell_commands(text):
    """Commands of a shell block: split at newlines and at unquoted ;, &, |,
    && and ||, after joining backslash-newlines and dropping comments."""
    out, word, quote = [], "", None
    text = re.sub(r"\\\n", " ", text)
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            word += c
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
            word += c
        elif c == "#" and (not word or word[-1].isspace()):
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        elif c in ";&|\n" and not (c == "&" and word.endswith((">", "<"))):
            out.append(word.strip())
            word = ""
            while i + 1 < len(text) and text[i + 1] in "&|":
                i += 1
        else:
            word += c
        i += 1
    out.append(word.strip())
    return [c for c in out if c]


def check_shell(root, files):
    problems, count = [], 0
    for path in files:
        _, blocks = split_blocks(open(path, encoding="utf-8").read())
        for lang, body, line in blocks:
            if lang not in SHELL:
                continue
            count += 1
            where = f"{os.path.relpath(path, root)}:{line}"
            r = subprocess.run(["bash", "-n"], input=body, capture_output=True, text=True)
            if r.returncode != 0:
                problems.append(f"{where}: shell block does not parse: {r.stderr.strip()}")
            # Files only (a last segment with an extension): `deploy/NAME`
            # is also kubectl's word for a Deployment.
            for word in re.findall(r"(?<![\w/.$-])((?:%s)[\w./-]*)" % "|".join(map(re.escape, REPO_DIRS)),
                                   re.sub(r"(^|\s)#.*", "", body)):
                p = word.rstrip(".,:")
                if "." not in p.rsplit("/", 1)[-1]:
                    continue
                if not os.path.exists(os.path.join(root, p)):
                    problems.append(f"{where}: shell block names {p}, which does not exist")
    return problems, count


def check_readme(root):
    path = os.path.join(root, "README.md")
    text = open(path, encoding="utf-8").read()
    problems = []
    lines = text.count("\n") + (0 if text.endswith("\n") else 1)
    if lines > README_MAX_LINES:
        problems.append(f"README.md: {lines} lines; the front page keeps under {README_MAX_LINES} "
                        f"(move detail into docs/)")
    prose, blocks = split_blocks(text)
    hs = headings(prose)
    quick = [k for k, (_, level, t) in enumerate(hs) if level == 2 and t.strip().lower() == "quick start"]
    if len(quick) != 1:
        return problems + ["README.md: no single '## Quick start' section"]
    k = quick[0]
    start = hs[k][0]
    end = next((i for i, level, _ in hs[k + 1:] if level <= 2), len(prose))
    shell = [b for b in blocks if b[0] in SHELL and start < b[2] <= end]
    if len(shell) != 1:
        problems.append(f"README.md: the Quick start has {len(shell)} shell blocks; it has one, of two commands")
    else:
        cmds = shell_commands(shell[0][1])
        if len(cmds) != 2:
            problems.append(f"README.md:{shell[0][2]}: the Quick start has {len(cmds)} commands, not two: {cmds}")
        for c in cmds:
            script = c.split()[0]
            p = os.path.join(root, script)
            if not (os.path.isfile(p) and os.access(p, os.X_OK)):
                problems.append(f"README.md:{shell[0][2]}: Quick start command {script} is not an executable "
                                f"script of the repository")
    return problems


# ---------------------------------------------------------------- self-test

def self_test(root, doc_path, proto_dir):
    """The field check must notice a row taken out and a field added."""
    problems = []
    text = open(doc_path, encoding="utf-8").read()
    prose, _ = split_blocks(text)
    lines = text.split("\n")
    # Drop the row of `file_check_interval` in the EdgeConfig section.
    hs = headings(prose)
    edge = next((k for k, (_, _, t) in enumerate(hs) if "`EdgeConfig`" in t), None)
    if edge is None:
        return ["self-test: no `EdgeConfig` heading in " + doc_path]
    lo = hs[edge][0]
    hi = hs[edge + 1][0] if edge + 1 < len(hs) else len(lines)
    row = next((i for i in range(lo, hi) if lines[i].startswith("| `file_check_interval` |")), None)
    if row is None:
        return ["self-test: no `file_check_interval` row under `EdgeConfig`"]
    with tempfile.TemporaryDirectory() as tmp:
        bad_doc = os.path.join(tmp, "configuration.md")
        open(bad_doc, "w", encoding="utf-8").write("\n".join(lines[:row] + lines[row + 1:]))
        found, _, _ = check_configuration(root, bad_doc, proto_dir)
        if not any("`EdgeConfig`" in p and "`file_check_interval` is not documented" in p for p in found):
            problems.append("self-test: removing EdgeConfig.file_check_interval's row went unnoticed")

        bad_protos = os.path.join(tmp, "proto")
        for base, _, files in os.walk(proto_dir):
            for f in files:
                if not f.endswith(".proto"):
                    continue
                src = os.path.join(base, f)
                dst = os.path.join(bad_protos, os.path.relpath(src, proto_dir))
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                t = open(src, encoding="utf-8").read()
                if f == "policy.proto":
                    t, n = re.subn(r"(message RateLimit \{)", r"\1\n  uint32 undocumented_field = 99;", t)
                    if n != 1:
                        problems.append("self-test: no message RateLimit in policy.proto")
                open(dst, "w", encoding="utf-8").write(t)
        found, _, _ = check_configuration(root, doc_path, bad_protos)
        if not any("`RateLimit`" in p and "`undocumented_field` is not documented" in p for p in found):
            problems.append("self-test: a field added to RateLimit went unnoticed")
    return problems


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                           os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    doc = os.path.join(root, "docs", "configuration.md")
    protos = os.path.join(root, "proto")
    problems = []

    found, n_messages, n_fields = check_configuration(root, doc, protos)
    problems += found
    files = markdown_files(root)
    found, n_links = check_links(root, files)
    problems += found
    found, n_blocks = check_shell(root, files)
    problems += found
    problems += check_readme(root)
    if not problems:
        problems += self_test(root, doc, protos)

    for p in problems:
        print(p)
    if problems:
        print(f"FAILED: {len(problems)} problem(s)")
        return 1
    print(f"ok: {n_fields} fields of {n_messages} config messages documented in docs/configuration.md; "
          f"{n_links} relative links and {n_blocks} shell blocks in {len(files)} Markdown files; "
          f"README Quick start: two commands; self-test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
