#!/usr/bin/python3
"""Generate the KMIP dictionary (tags, enumerations, masks) from the spec HTML.

Usage: tools/gen_kmip_dict.py SPEC_DIR REPO_ROOT
  SPEC_DIR holds kmip-spec-v1.4-os.html and kmip-spec-v2.1-os.html
  (the OASIS standards); writes
    REPO_ROOT/include/keyfleet/kmip_tags.h   #defines for C code
    REPO_ROOT/src/ttlv/dict_gen.c            tables behind kf_ttlv_tag_name() etc.
    (keyfleet's own tags come from include/keyfleet/kmip_ext.h at compile time)

Both outputs are committed; the build never needs the spec. Names are the
KMIP XML names: the spec text normalised by the rules of KMIP Profiles 1.4
section 5.4.1.1 (see normalize()).
"""
import html.parser
import re
import sys

TYPES = {
    'Structure': 1, 'Integer': 2, 'Long Integer': 3, 'Big Integer': 4,
    'Enumeration': 5, 'Boolean': 6, 'Text String': 7, 'Byte String': 8,
    'Date-Time Extended': 0x0B, 'Date-Time': 9, 'Interval': 0x0A,
}

# C macro prefix per enumeration (KMIP_<PREFIX>_<NAME>); others use the
# upper-snake enumeration name.
PREFIX = {
    'Operation': 'OP', 'Object Type': 'OBJ', 'Cryptographic Algorithm': 'ALG',
    'State': 'STATE', 'Result Status': 'RESULT_STATUS', 'Result Reason': 'REASON',
    'Key Format Type': 'KEYFMT', 'Name Type': 'NAME_TYPE', 'Block Cipher Mode': 'MODE',
    'Padding Method': 'PAD', 'Hashing Algorithm': 'HASH',
    'Digital Signature Algorithm': 'SIGALG', 'Revocation Reason Code': 'REVOKE',
    'Cryptographic Usage Mask': 'USAGE', 'Link Type': 'LINK',
    'Storage Status Mask': 'STORAGE', 'Protection Storage Mask': 'PROTECT',
    'Batch Error Continuation Option': 'BATCH_ERR', 'Query Function': 'QUERY',
    'Credential Type': 'CRED', 'Secret Data Type': 'SECRET', 'Key Role Type': 'KEY_ROLE',
    'Recommended Curve': 'CURVE', 'Tag': 'ENUMTAG',
}

# Tags that carry an enumeration whose table has another name.
ENUM_ALIAS = {
    'Mask Generator Hashing Algorithm': 'Hashing Algorithm',
    'Destroy Action': 'Destroy Action Type',
    'Object Group Member': 'Object Group Member Option',
    'Recommended Curve': 'Recommended Curve Enumeration',
    'Certificate Request Type': 'Certificate Request Type',
    'Rotate Name Type': 'Rotate Name Type',
}


def normalize(text):
    """KMIP Profiles 1.4 5.4.1.1: spec text to XML name."""
    s = re.sub(r'[()]', ' ', text)
    s = re.sub(r'[^\w\s]([a-zA-Z][a-z])', r' \1', s)
    out = []
    for i, w in enumerate(s.split(' ')):
        w = re.sub(r'\W', '_', w)
        if i == 0:
            w = re.sub(r'^(\d+)(.*)$', r'\2\1', w)
        out.append(w[:1].upper() + w[1:])
    return ''.join(out)


def c_ident(name):
    """XML name to UPPER_SNAKE for C macros."""
    s = re.sub(r'([a-z0-9])([A-Z])', r'\1_\2', name)
    s = re.sub(r'([A-Z]+)([A-Z][a-z])', r'\1_\2', s)
    s = re.sub(r'\W', '_', s)
    s = re.sub(r'_+', '_', s).strip('_').upper()
    if s[:1].isdigit():
        s = 'N' + s
    return s


def clean(text):
    text = text.replace('\u00a0', ' ').replace('\ufffd', ' ').replace('\u2019', "'")
    text = re.sub(r'[^\x20-\x7e]', ' ', text)
    return ' '.join(text.split())


class Tables(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.stack, self.cell, self.row = [], [], None, None
        self.heading, self.in_heading, self.hbuf = '', False, ''

    def handle_starttag(self, tag, attrs):
        if tag == 'table':
            self.stack.append({'rows': [], 'head': self.heading})
        elif tag == 'tr' and self.stack:
            self.row = []
        elif tag in ('td', 'th') and self.stack:
            self.cell = ''
        elif re.match(r'h[1-6]$', tag):
            self.in_heading, self.hbuf = True, ''
        elif tag == 'br' and self.cell is not None:
            self.cell += ' '

    def handle_endtag(self, tag):
        if tag == 'table' and self.stack:
            self.tables.append(self.stack.pop())
        elif tag == 'tr' and self.stack and self.row is not None:
            self.stack[-1]['rows'].append(self.row)
            self.row = None
        elif tag in ('td', 'th') and self.cell is not None and self.row is not None:
            self.row.append(clean(self.cell))
            self.cell = None
        elif re.match(r'h[1-6]$', tag):
            self.in_heading = False
            self.heading = clean(self.hbuf)

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data
        if self.in_heading:
            self.hbuf += data


def load(path):
    p = Tables()
    with open(path, encoding='windows-1252', errors='replace') as f:
        p.feed(f.read())
    return p.tables


def section_of(heading):
    m = re.match(r'([\d.]+)\s', heading)
    return m.group(1) if m else ''


def parse_spec(tables, tags, enums, types, enum_refs):
    """Fill tags {value: [names]}, enums {title: {value: [names]}}, types, enum_refs."""
    by_section = {}
    for t in tables:
        rows = t['rows']
        if len(rows) < 2:
            continue
        head = rows[1] if len(rows[0]) == 1 else rows[0]
        if rows[0] == ['Tag'] and rows[1][:1] in (['Object'], ['Name']):
            for r in rows[2:]:
                if len(r) >= 2 and re.fullmatch(r'[0-9A-Fa-f]{6}', r[1]):
                    name = r[0]
                    if name.startswith('(') or name.startswith('Extension'):
                        continue
                    tags.setdefault(int(r[1], 16), [])
                    if name not in tags[int(r[1], 16)]:
                        tags[int(r[1], 16)].append(name)
            continue
        if len(rows[0]) == 1 and rows[1][:2] == ['Name', 'Value'] and rows[0][0] != 'Tag':
            title = rows[0][0]
            if title.endswith(' Enumerations'):
                title = title[:-len(' Enumerations')]
            heading = t['head']
            m = re.match(r'[\d.]+\s+(.*?)( Enumeration)?$', heading)
            if m and 'Mask' not in heading:
                title = m.group(1)  # headings are more reliable than table captions
            vals = enums.setdefault(title, {})
            for r in rows[2:]:
                # "00000006 (deprecated)" still names a value; "(Reserved)" does not.
                m = re.match(r'([0-9A-Fa-f]{1,8})(\s|$)', r[1]) if len(r) >= 2 else None
                if not m or r[0].startswith('('):
                    continue
                v = int(m.group(1), 16)
                vals.setdefault(v, [])
                if r[0] not in vals[v]:
                    vals[v].append(r[0])
            by_section[section_of(heading)] = title
            continue
        if head[:1] in (['Object'], ['Item']) and 'Encoding' in head:
            col = head.index('Encoding')
            for r in rows[1:]:
                if len(r) <= col or not r[0]:
                    continue
                name, enc = r[0], r[col]
                for tn in sorted(TYPES, key=len, reverse=True):
                    if enc.startswith(tn):
                        types.setdefault(name, set()).add(TYPES[tn])
                        break
                m = re.search(r'see\s+(?:Section\s+)?([\d.]+\d)', enc)
                if enc.startswith('Enumeration') and m:
                    enum_refs.setdefault(name, set()).add(m.group(1))
    return by_section


def main():
    spec_dir, root = sys.argv[1], sys.argv[2]
    tags, enums, types, refs = {}, {}, {}, {}
    sections = {}
    for f in ('kmip-spec-v2.1-os.html', 'kmip-spec-v1.4-os.html'):
        refs_v = {}
        sec = parse_spec(load(spec_dir + '/' + f), tags, enums, types, refs_v)
        for name, ss in refs_v.items():
            for s in ss:
                if s in sec:
                    refs.setdefault(name, set()).add(sec[s])
        sections.update(sec)

    masks = {t for t in enums if t.endswith('Mask')}
    tagname = {v: names[0] for v, names in tags.items()}
    by_text = {}
    for v, names in tags.items():
        for n in names:
            by_text[n] = v

    # Which enumeration does each Enumeration-typed tag carry?
    tag_enum = {}
    for v, names in tags.items():
        for n in names:
            cands = set(refs.get(n, set()))
            if n in enums:
                cands.add(n)
            if n in ENUM_ALIAS and ENUM_ALIAS[n] in enums:
                cands.add(ENUM_ALIAS[n])
            if cands and v not in tag_enum:
                tag_enum[v] = sorted(cands, key=lambda c: (c != n, c))[0]
    for m in masks:
        if m in by_text:
            tag_enum[by_text[m]] = m

    def tag_type(v):
        ts = set()
        for n in tags[v]:
            ts |= types.get(n, set())
        if v in tag_enum and tag_enum[v] not in masks:
            return 5 if ts <= {5} else 0
        return ts.pop() if len(ts) == 1 else 0

    enum_list = sorted(set(tag_enum.values()) | set(enums), key=str.lower)
    enum_id = {e: i for i, e in enumerate(enum_list)}

    write_c(root, tags, enums, enum_list, enum_id, tag_enum, tag_type, masks)
    write_h(root, tags, enums, enum_list, masks)


def xml_names(names):
    seen = []
    for n in names:
        x = normalize(n)
        if x and x not in seen:
            seen.append(x)
    return seen


def cstr(s):
    return '"' + s.replace('\\', '\\\\').replace('"', '\\"') + '"'


def write_c(root, tags, enums, enum_list, enum_id, tag_enum, tag_type, masks):
    out = ['/* Generated by tools/gen_kmip_dict.py from the KMIP 1.4 and 2.1 specifications. Do not edit. */',
           '#include "ttlv/dict.h"', '']
    for e in enum_list:
        vals = enums.get(e, {})
        out.append('static const struct kf_dict_value enum_%d[] = { /* %s */' % (enum_id[e], e))
        for v in sorted(vals):
            for i, n in enumerate(xml_names(vals[v])):
                out.append('    {0x%08XU, %s, %d},' % (v, cstr(n), 1 if i == 0 else 0))
        out.append('    {0, NULL, 0},')
        out.append('};')
    out.append('')
    out.append('const struct kf_dict_enum kf_dict_enums[] = {')
    for e in enum_list:
        n = sum(len(xml_names(ns)) for ns in enums.get(e, {}).values())
        out.append('    {%s, enum_%d, %d, %d},' % (cstr(e), enum_id[e], n, 1 if e in masks else 0))
    out.append('};')
    out.append('const size_t kf_dict_enum_count = %d;' % len(enum_list))
    out.append('')
    out.append('/* Sorted by tag; the first entry of a tag is its primary (KMIP 2.1) name. */')
    out.append('const struct kf_dict_tag kf_dict_tags[] = {')
    count = 0
    for v in sorted(tags):
        eid = enum_id[tag_enum[v]] if v in tag_enum else -1
        for i, n in enumerate(xml_names(tags[v])):
            out.append('    {0x%06XU, %d, %d, %s, %d},' % (v, tag_type(v), eid, cstr(n), 1 if i == 0 else 0))
            count += 1
    out.append('};')
    out.append('const size_t kf_dict_tag_count = %d;' % count)
    with open(root + '/src/ttlv/dict_gen.c', 'w') as f:
        f.write('\n'.join(out) + '\n')


def write_h(root, tags, enums, enum_list, masks):
    out = ['''/*
 * KMIP numbers for C code. Generated by tools/gen_kmip_dict.py from the
 * KMIP 1.4 and 2.1 specifications (regenerate, never edit by hand):
 *   /usr/bin/python3 tools/gen_kmip_dict.py /work/shared/kmip/spec .
 *
 * Naming scheme: KMIP_<PREFIX>_<NAME>, NAME being the KMIP XML name
 * (KMIP Profiles 5.4.1.1 normalisation) in UPPER_SNAKE case.
 *   KMIP_TAG_<TAG>          tags              KMIP_TAG_REQUEST_MESSAGE 0x420078
 *   KMIP_OP_<OPERATION>     Operation         KMIP_OP_CREATE 0x01
 *   KMIP_OBJ_ KMIP_ALG_ KMIP_STATE_ KMIP_RESULT_STATUS_ KMIP_REASON_ (Result Reason)
 *   KMIP_KEYFMT_ KMIP_NAME_TYPE_ KMIP_MODE_ (Block Cipher Mode) KMIP_PAD_ KMIP_HASH_
 *   KMIP_SIGALG_ KMIP_REVOKE_ (Revocation Reason Code) KMIP_LINK_ KMIP_USAGE_ (Cryptographic
 *   Usage Mask bits) KMIP_STORAGE_ KMIP_PROTECT_ KMIP_BATCH_ERR_ KMIP_QUERY_ KMIP_CRED_
 *   KMIP_SECRET_ KMIP_KEY_ROLE_ KMIP_CURVE_; any other enumeration uses its own name in
 *   UPPER_SNAKE as prefix (KMIP_WRAPPING_METHOD_ENCRYPT).
 * Where KMIP 1.4 and 2.1 name a value differently both names are defined.
 * keyfleet's extensions (kmip_ext.h): KMIP_TAG_KEYFLEET_* and KMIP_OP_KEYFLEET_*,
 * generated from kmip_ext.h as well.
 */
#ifndef KEYFLEET_KMIP_TAGS_H
#define KEYFLEET_KMIP_TAGS_H
''']
    seen = set()

    def define(name, value, comment=None):
        if name in seen:
            return
        seen.add(name)
        out.append('#define %-56s 0x%s%s' % (name, value, ('  /* %s */' % comment) if comment else ''))

    out.append('/* Tags */')
    for v in sorted(tags):
        for n in xml_names(tags[v]):
            define('KMIP_TAG_' + c_ident(n), '%06XU' % v)
    ext = open(root + '/include/keyfleet/kmip_ext.h').read()
    for m in re.finditer(r'^KF_EXT_TAG\((\w+),\s*(0x[0-9A-Fa-f]+)', ext, re.M):
        define('KMIP_TAG_' + c_ident(m.group(1)), '%06XU' % int(m.group(2), 16))
    for e in enum_list:
        vals = enums.get(e, {})
        if not vals:
            continue
        prefix = PREFIX.get(e, c_ident(normalize(e)))
        out.append('')
        out.append('/* %s%s */' % (e, '' if e in masks else ' enumeration'))
        for v in sorted(vals):
            for n in xml_names(vals[v]):
                define('KMIP_%s_%s' % (prefix, c_ident(n)), '%08XU' % v)
        if e == 'Operation':
            for m in re.finditer(r'^KF_EXT_OP\((\w+),\s*(0x[0-9A-Fa-f]+)', ext, re.M):
                define('KMIP_OP_' + c_ident(m.group(1)), '%08XU' % int(m.group(2), 16), 'keyfleet')
    out.append('')
    out.append('#endif')
    with open(root + '/include/keyfleet/kmip_tags.h', 'w') as f:
        f.write('\n'.join(out) + '\n')


if __name__ == '__main__':
    main()
