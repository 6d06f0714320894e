//! Proves that `wsdl/` is a faithful trim of Microsoft's official EWS schema (V2018_01_08) and that the
//! hand-written samples in `wsdl/samples/` validate against both it and the official schema.
//!
//! "Faithful trim" means, checked here component by component against the official files:
//! - every element, complexType, simpleType, group and attributeGroup of the subset exists officially,
//!   with the same kind, and every schema node the subset keeps carries the official attributes
//!   (name, type, ref, base, minOccurs, maxOccurs, use, ...);
//! - particles kept in a sequence or choice are official ones in the official relative order, and an
//!   official particle may only be missing when it is optional (minOccurs="0", or a group that can be
//!   empty) or when it is an alternative of a choice;
//! - kept attributes are official ones with the same type and `use`, and no required attribute is missing;
//!   kept enumeration values are official, other facets (patterns, ranges) are untouched;
//! - the subset is closed (every reference resolves inside it) and holds nothing that the WSDL operations
//!   cannot reach;
//! - `services.wsdl` holds official messages, parts, port type operations and binding operations, minus
//!   header parts; `notification.wsdl` is consistent and matches [MS-OXWSPSNTIF].
//!
//! The official files are read from `../shared/ews-schema/` beside the crate root; a checkout elsewhere (a
//! git worktree, say) points `TASKBRIDGE_EWS_SCHEMA_DIR` at that folder. Without them the comparisons
//! with the official files are reported as not checked (and fail under `TASKBRIDGE_TEST_REQUIRE_ALL`);
//! the subset's own closure and consistency are always checked.

mod external;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

const XS: &str = "http://www.w3.org/2001/XMLSchema";
const WSDL: &str = "http://schemas.xmlsoap.org/wsdl/";
const SOAP_BINDING: &str = "http://schemas.xmlsoap.org/wsdl/soap/";
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
const EWS_TYPES: &str = "http://schemas.microsoft.com/exchange/services/2006/types";
const EWS_MESSAGES: &str = "http://schemas.microsoft.com/exchange/services/2006/messages";

/// The official schema set the subset is cut from.
const OFFICIAL_SET: &str = "exchange_online_2018";

/// Attributes whose value is a QName (a list of them for `memberTypes`) in XSD and WSDL 1.1; they are
/// stored resolved, as `{namespace}local`, so that prefixes do not matter when comparing.
const QNAME_ATTRIBUTES: &[&str] = &[
    "type",
    "ref",
    "base",
    "substitutionGroup",
    "itemType",
    "memberTypes",
    "element",
    "message",
    "binding",
];

const PARTICLES: &[&str] = &["element", "sequence", "choice", "all", "any", "group"];
const ATTRIBUTE_USES: &[&str] = &["attribute", "attributeGroup", "anyAttribute"];
const FACETS: &[&str] = &[
    "enumeration",
    "pattern",
    "length",
    "minLength",
    "maxLength",
    "minInclusive",
    "maxInclusive",
    "minExclusive",
    "maxExclusive",
    "totalDigits",
    "fractionDigits",
    "whiteSpace",
];

// ---------------------------------------------------------------------------------------------------------
// A small namespace-aware DOM.

/// One XML element: namespace resolved, QName-valued attributes resolved, comments and text dropped.
#[derive(Debug, Clone)]
struct Node {
    ns: String,
    local: String,
    attrs: BTreeMap<String, String>,
    /// Namespace declarations made on this element (prefix, "" for the default namespace).
    ns_decls: BTreeMap<String, String>,
    children: Vec<Node>,
}

type Scope = BTreeMap<String, String>;

impl Node {
    fn is(&self, ns: &str, local: &str) -> bool {
        self.ns == ns && self.local == local
    }

    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).map(String::as_str)
    }

    /// Child elements, without `xs:annotation` and `wsdl:documentation`.
    fn kids(&self) -> impl Iterator<Item = &Node> {
        self.children
            .iter()
            .filter(|c| !c.is(XS, "annotation") && !c.is(WSDL, "documentation"))
    }

    fn kids_named<'a>(&'a self, ns: &'a str, local: &'a str) -> impl Iterator<Item = &'a Node> {
        self.kids().filter(move |c| c.is(ns, local))
    }

    fn kid_named(&self, ns: &str, local: &str) -> Option<&Node> {
        self.kids().find(|c| c.is(ns, local))
    }

    /// Every descendant, this node included, depth first.
    fn descendants(&self) -> Vec<&Node> {
        let mut out = vec![self];
        for c in self.kids() {
            out.extend(c.descendants());
        }
        out
    }
}

fn parse_file(path: &Path) -> Node {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_xml(&text).unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()))
}

fn parse_xml(text: &str) -> Result<Node, String> {
    let mut reader = Reader::from_str(text);
    let mut open: Vec<(Node, Scope)> = Vec::new();
    let mut root = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("at byte {}: {e}", reader.buffer_position()))?;
        match event {
            Event::Start(start) => open.push(start_node(&start, open.last().map(|(_, s)| s))?),
            Event::Empty(start) => {
                let (node, _) = start_node(&start, open.last().map(|(_, s)| s))?;
                attach(&mut open, &mut root, node);
            }
            Event::End(_) => {
                let (node, _) = open.pop().ok_or("end tag without start tag")?;
                attach(&mut open, &mut root, node);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    root.ok_or_else(|| "no root element".to_string())
}

fn attach(open: &mut [(Node, Scope)], root: &mut Option<Node>, node: Node) {
    match open.last_mut() {
        Some((parent, _)) => parent.children.push(node),
        None => *root = Some(node),
    }
}

fn start_node(start: &BytesStart, parent: Option<&Scope>) -> Result<(Node, Scope), String> {
    let mut scope = parent
        .cloned()
        .unwrap_or_else(|| Scope::from([("xml".to_string(), XML_NS.to_string())]));
    let mut ns_decls = BTreeMap::new();
    let mut raw = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| e.to_string())?;
        let key = attr.key.as_ref().to_string();
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| e.to_string())?
            .into_owned();
        let prefix = if key == "xmlns" {
            Some("")
        } else {
            key.strip_prefix("xmlns:")
        };
        match prefix {
            Some(p) => {
                scope.insert(p.to_string(), value.clone());
                ns_decls.insert(p.to_string(), value);
            }
            None => raw.push((key, value)),
        }
    }
    let (ns, local) = resolve(start.name().as_ref(), &scope)?;
    let mut attrs = BTreeMap::new();
    for (key, value) in raw {
        let value = if QNAME_ATTRIBUTES.contains(&key.as_str()) {
            let names: Result<Vec<_>, _> = value
                .split_whitespace()
                .map(|q| resolve(q, &scope).map(|(ns, local)| format!("{{{ns}}}{local}")))
                .collect();
            names?.join(" ")
        } else {
            value
        };
        attrs.insert(key, value);
    }
    let node = Node {
        ns,
        local,
        attrs,
        ns_decls,
        children: Vec::new(),
    };
    Ok((node, scope))
}

/// Resolves `prefix:local` (or `local`, in the default namespace) against the declarations in scope.
fn resolve(qname: &str, scope: &Scope) -> Result<(String, String), String> {
    let (prefix, local) = qname.split_once(':').unwrap_or(("", qname));
    match scope.get(prefix) {
        Some(ns) => Ok((ns.clone(), local.to_string())),
        None if prefix.is_empty() => Ok((String::new(), local.to_string())),
        None => Err(format!("undeclared prefix in {qname:?}")),
    }
}

/// `{ns}local` written the way the schema files write it (`t:`, `m:`, `xs:`).
fn short(clark: &str) -> String {
    let Some((ns, local)) = clark.strip_prefix('{').and_then(|r| r.split_once('}')) else {
        return clark.to_string();
    };
    let prefix = match ns {
        EWS_TYPES => "t",
        EWS_MESSAGES => "m",
        XS => "xs",
        _ => return clark.to_string(),
    };
    format!("{prefix}:{local}")
}

fn clark(ns: &str, local: &str) -> String {
    format!("{{{ns}}}{local}")
}

// ---------------------------------------------------------------------------------------------------------
// Files.

fn subset_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("wsdl")
}

/// The `ews-schema` folder (official schema sets + validate.sh); `None`, reported as not checking
/// `what` (or failing under `TASKBRIDGE_TEST_REQUIRE_ALL`), where it is not beside the crate.
fn official_root(what: &str) -> Option<PathBuf> {
    external::official_schema(what)
}

/// The official schema set the subset is cut from, if the official schema is there.
fn official_dir(what: &str) -> Option<PathBuf> {
    official_root(what).map(|root| root.join(OFFICIAL_SET))
}

// ---------------------------------------------------------------------------------------------------------
// Schema components.

/// Kind and `{ns}name` of a top-level schema component.
type ComponentKey = (String, String);

/// The top-level components of the schema documents of one set, plus their root elements.
struct Schema {
    components: BTreeMap<ComponentKey, Node>,
    roots: BTreeMap<String, Node>,
}

fn load_schema(dir: &Path) -> Schema {
    let mut components = BTreeMap::new();
    let mut roots = BTreeMap::new();
    for file in ["types.xsd", "messages.xsd"] {
        let root = parse_file(&dir.join(file));
        let target = root.attr("targetNamespace").unwrap_or_default().to_string();
        for c in root.kids() {
            if let Some(name) = c.attr("name") {
                components.insert((c.local.clone(), clark(&target, name)), c.clone());
            }
        }
        roots.insert(file.to_string(), root);
    }
    Schema { components, roots }
}

fn component_label(key: &ComponentKey) -> String {
    format!("{} {}", key.0, short(&key.1))
}

/// Fails with every problem listed, one per line.
fn assert_no_problems(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s)\n{}\n",
        problems.len(),
        problems
            .iter()
            .map(|p| format!("  - {p}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ---------------------------------------------------------------------------------------------------------
// Comparing a kept node with its official counterpart.

/// Attributes of a schema node with the XSD defaults filled in, so `minOccurs="1"` equals no minOccurs.
fn normalized_attrs(node: &Node) -> BTreeMap<String, String> {
    let mut attrs = node.attrs.clone();
    if PARTICLES.contains(&node.local.as_str()) {
        attrs
            .entry("minOccurs".into())
            .or_insert_with(|| "1".into());
        attrs
            .entry("maxOccurs".into())
            .or_insert_with(|| "1".into());
    }
    if node.local == "attribute" {
        attrs
            .entry("use".into())
            .or_insert_with(|| "optional".into());
    }
    attrs
}

fn compare_node(path: &str, sub: &Node, off: &Node, out: &mut Vec<String>) {
    if sub.ns != off.ns || sub.local != off.local {
        out.push(format!(
            "{path}: <{}> where the official schema has <{}>",
            sub.local, off.local
        ));
        return;
    }
    let (sa, oa) = (normalized_attrs(sub), normalized_attrs(off));
    for key in sa.keys().chain(oa.keys()).collect::<BTreeSet<_>>() {
        let (s, o) = (sa.get(key), oa.get(key));
        if s != o {
            let show =
                |v: Option<&String>| v.map_or("(none)".to_string(), |v| format!("{:?}", short(v)));
            out.push(format!(
                "{path}: {key} is {} here but {} officially",
                show(s),
                show(o)
            ));
        }
    }
    let pick = |n: &'_ Node, kinds: &[&str]| -> Vec<Node> {
        n.kids()
            .filter(|c| c.ns == XS && kinds.contains(&c.local.as_str()))
            .cloned()
            .collect()
    };
    compare_particles(path, sub, &pick(sub, PARTICLES), &pick(off, PARTICLES), out);
    compare_attribute_uses(
        path,
        &pick(sub, ATTRIBUTE_USES),
        &pick(off, ATTRIBUTE_USES),
        out,
    );
    compare_facets(path, &pick(sub, FACETS), &pick(off, FACETS), out);
    let rest = |n: &Node| -> Vec<Node> {
        n.kids()
            .filter(|c| {
                let l = c.local.as_str();
                !(c.ns == XS
                    && (PARTICLES.contains(&l)
                        || ATTRIBUTE_USES.contains(&l)
                        || FACETS.contains(&l)))
            })
            .cloned()
            .collect()
    };
    compare_in_pairs(path, &rest(sub), &rest(off), out);
}

/// Structural children (complexContent, extension, anonymous types, union members...) pair up one to one.
fn compare_in_pairs(path: &str, sub: &[Node], off: &[Node], out: &mut Vec<String>) {
    if sub.len() != off.len() {
        let names = |v: &[Node]| {
            v.iter()
                .map(|n| n.local.clone())
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push(format!(
            "{path}: holds [{}] where the official schema holds [{}]",
            names(sub),
            names(off)
        ));
        return;
    }
    for (s, o) in sub.iter().zip(off) {
        compare_node(&format!("{path}/{}", s.local), s, o, out);
    }
}

fn particle_label(p: &Node) -> String {
    match (p.local.as_str(), p.attr("name"), p.attr("ref")) {
        ("element", Some(name), _) => name.to_string(),
        (kind, _, Some(r)) => format!("{kind} ref={}", short(r)),
        (kind, _, _) => kind.to_string(),
    }
}

fn same_particle_head(s: &Node, o: &Node) -> bool {
    s.local == o.local && s.attr("name") == o.attr("name") && s.attr("ref") == o.attr("ref")
}

/// Whether an official particle may be left out: it can match nothing at all.
fn emptiable(p: &Node) -> bool {
    if p.attr("minOccurs") == Some("0") {
        return true;
    }
    let mut inner = p
        .kids()
        .filter(|c| c.ns == XS && PARTICLES.contains(&c.local.as_str()));
    match p.local.as_str() {
        "sequence" | "all" => inner.all(emptiable),
        "choice" => {
            let inner: Vec<_> = inner.collect();
            inner.is_empty() || inner.into_iter().any(emptiable)
        }
        _ => false,
    }
}

/// Kept particles must be official ones in the official order; in a sequence (or a type's content), an
/// official particle may only be missing if it is optional; in a choice, any alternative may go.
fn compare_particles(path: &str, parent: &Node, sub: &[Node], off: &[Node], out: &mut Vec<String>) {
    let in_choice = parent.local == "choice";
    let mut matched = vec![false; off.len()];
    let mut next = 0;
    for s in sub {
        let label = format!("{path}/{}", particle_label(s));
        let exact = (next..off.len()).find(|&i| {
            same_particle_head(s, &off[i]) && {
                let mut trial = Vec::new();
                compare_node(&label, s, &off[i], &mut trial);
                trial.is_empty()
            }
        });
        // Failing an exact match, pair it with the next official particle of the same name or kind, so that
        // the report says what differs.
        let found = exact.or_else(|| (next..off.len()).find(|&i| same_particle_head(s, &off[i])));
        match found {
            Some(i) => {
                compare_node(&label, s, &off[i], out);
                matched[i] = true;
                next = i + 1;
            }
            None if off.iter().any(|o| same_particle_head(s, o)) => {
                out.push(format!("{label}: out of the official order"));
            }
            None => out.push(format!("{label}: not in the official content model")),
        }
    }
    if in_choice {
        if sub.is_empty() && !off.is_empty() && parent.attr("minOccurs") != Some("0") {
            out.push(format!(
                "{path}: every alternative of a required choice was dropped"
            ));
        }
        return;
    }
    for (o, _) in off.iter().zip(&matched).filter(|(_, m)| !**m) {
        if !emptiable(o) {
            out.push(format!(
                "{path}/{}: required officially (minOccurs={}) but missing here",
                particle_label(o),
                o.attr("minOccurs").unwrap_or("1")
            ));
        }
    }
}

fn attribute_key(a: &Node) -> String {
    match (a.local.as_str(), a.attr("name"), a.attr("ref")) {
        ("attribute", Some(name), _) => format!("@{name}"),
        ("attribute", _, Some(r)) => format!("@{}", short(r)),
        ("attributeGroup", _, Some(r)) => format!("attributeGroup {}", short(r)),
        (kind, _, _) => kind.to_string(),
    }
}

/// Kept attributes are official ones (same type, same use); required attributes and attribute group
/// references must stay.
fn compare_attribute_uses(path: &str, sub: &[Node], off: &[Node], out: &mut Vec<String>) {
    for s in sub {
        let key = attribute_key(s);
        match off.iter().find(|o| attribute_key(o) == key) {
            Some(o) => compare_node(&format!("{path}/{key}"), s, o, out),
            None => out.push(format!("{path}/{key}: not an official attribute here")),
        }
    }
    for o in off {
        let key = attribute_key(o);
        let kept = sub.iter().any(|s| attribute_key(s) == key);
        let must_stay = o.attr("use") == Some("required") || o.local == "attributeGroup";
        if !kept && must_stay {
            out.push(format!(
                "{path}/{key}: required officially but missing here"
            ));
        }
    }
}

/// Enumeration values may be dropped (never added or reordered); other facets must be identical.
fn compare_facets(path: &str, sub: &[Node], off: &[Node], out: &mut Vec<String>) {
    let values = |v: &[Node]| -> Vec<String> {
        v.iter()
            .filter(|f| f.local == "enumeration")
            .filter_map(|f| f.attr("value").map(String::from))
            .collect()
    };
    let official = values(off);
    let mut next = 0;
    for value in values(sub) {
        match official[next..].iter().position(|v| *v == value) {
            Some(i) => next += i + 1,
            None if official.contains(&value) => out.push(format!(
                "{path}: enumeration {value:?} out of the official order"
            )),
            None => out.push(format!(
                "{path}: enumeration {value:?} is not an official value"
            )),
        }
    }
    let others = |v: &[Node]| -> Vec<(String, String)> {
        v.iter()
            .filter(|f| f.local != "enumeration")
            .map(|f| {
                (
                    f.local.clone(),
                    f.attr("value").unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    let (s, o) = (others(sub), others(off));
    if s != o {
        out.push(format!("{path}: facets {s:?} here but {o:?} officially"));
    }
}

// ---------------------------------------------------------------------------------------------------------
// Closure.

/// The component kinds a reference made through `attribute` on a node `holder` may point to.
fn reference_kinds(holder: &str, attribute: &str) -> &'static [&'static str] {
    match (attribute, holder) {
        ("ref", "element") | ("substitutionGroup", _) => &["element"],
        ("ref", "attribute") => &["attribute"],
        ("ref", "attributeGroup") => &["attributeGroup"],
        ("ref", "group") => &["group"],
        ("type", "element") | ("base", _) => &["complexType", "simpleType"],
        _ => &["simpleType"],
    }
}

/// References from a component to other components (XSD built-ins and the xml: namespace left out).
fn references(component: &Node) -> Vec<(Vec<ComponentKey>, String)> {
    let mut refs = Vec::new();
    for node in component.descendants() {
        for attribute in [
            "type",
            "ref",
            "base",
            "substitutionGroup",
            "itemType",
            "memberTypes",
        ] {
            for target in node.attr(attribute).unwrap_or_default().split_whitespace() {
                if target.starts_with(&format!("{{{XS}}}"))
                    || target.starts_with(&format!("{{{XML_NS}}}"))
                {
                    continue;
                }
                let keys = reference_kinds(&node.local, attribute)
                    .iter()
                    .map(|k| (k.to_string(), target.to_string()))
                    .collect();
                refs.push((keys, target.to_string()));
            }
        }
    }
    refs
}

/// Global elements used as message parts by a WSDL document.
fn part_elements(wsdl: &Node) -> Vec<String> {
    wsdl.kids_named(WSDL, "message")
        .flat_map(|m| m.kids_named(WSDL, "part"))
        .filter_map(|p| p.attr("element").map(String::from))
        .collect()
}

// ---------------------------------------------------------------------------------------------------------
// WSDL.

fn by_name<'a>(parent: &'a Node, ns: &'a str, local: &'a str) -> BTreeMap<String, &'a Node> {
    parent
        .kids_named(ns, local)
        .filter_map(|n| n.attr("name").map(|name| (name.to_string(), n)))
        .collect()
}

/// Local name of a resolved `{ns}local` reference.
fn local_of(clark: &str) -> &str {
    clark.rsplit_once('}').map_or(clark, |(_, l)| l)
}

/// The `wsdl:input` and `wsdl:output` of an operation.
fn directions(op: &Node) -> impl Iterator<Item = &Node> {
    op.kids()
        .filter(|n| n.is(WSDL, "input") || n.is(WSDL, "output"))
}

/// Checks that a WSDL document hangs together: parts point at elements of our schema, operations at
/// existing messages, bindings at port types, header and body parts at existing parts.
fn check_wsdl_consistency(file: &str, wsdl: &Node, schema: &Schema, out: &mut Vec<String>) {
    let messages = by_name(wsdl, WSDL, "message");
    let port_types = by_name(wsdl, WSDL, "portType");
    for element in part_elements(wsdl) {
        if !schema
            .components
            .contains_key(&("element".to_string(), element.clone()))
        {
            out.push(format!(
                "{file}: part element {} is not declared in our schema",
                short(&element)
            ));
        }
    }
    let parts_of = |message: &str| -> Option<BTreeSet<String>> {
        messages.get(local_of(message)).map(|m| {
            m.kids_named(WSDL, "part")
                .filter_map(|p| p.attr("name").map(String::from))
                .collect()
        })
    };
    for (pt_name, pt) in &port_types {
        for op in pt.kids_named(WSDL, "operation") {
            for io in directions(op) {
                let message = io.attr("message").unwrap_or_default();
                if parts_of(message).is_none() {
                    out.push(format!(
                        "{file}: portType {pt_name} operation {} uses missing message {}",
                        op.attr("name").unwrap_or_default(),
                        local_of(message)
                    ));
                }
            }
        }
    }
    for binding in wsdl.kids_named(WSDL, "binding") {
        let b_name = binding.attr("name").unwrap_or_default();
        let Some(pt) = port_types.get(local_of(binding.attr("type").unwrap_or_default())) else {
            out.push(format!("{file}: binding {b_name} has no port type"));
            continue;
        };
        let names = |n: &Node| -> BTreeSet<String> {
            n.kids_named(WSDL, "operation")
                .filter_map(|o| o.attr("name").map(String::from))
                .collect()
        };
        if names(binding) != names(pt) {
            out.push(format!(
                "{file}: binding {b_name} and its port type list different operations"
            ));
        }
        for op in binding.kids_named(WSDL, "operation") {
            let op_name = op.attr("name").unwrap_or_default();
            let abstract_op = pt
                .kids_named(WSDL, "operation")
                .find(|o| o.attr("name") == Some(op_name));
            for io in directions(op) {
                let message = abstract_op
                    .and_then(|o| o.kid_named(WSDL, &io.local))
                    .and_then(|n| n.attr("message"))
                    .unwrap_or_default();
                let parts = parts_of(message).unwrap_or_default();
                for header in io.kids_named(SOAP_BINDING, "header") {
                    let part = header.attr("part").unwrap_or_default();
                    let ok = parts_of(header.attr("message").unwrap_or_default())
                        .is_some_and(|p| p.contains(part));
                    if !ok {
                        out.push(format!(
                            "{file}: {op_name} {}: header part {part} does not exist",
                            io.local
                        ));
                    }
                }
                for body in io.kids_named(SOAP_BINDING, "body") {
                    for part in body.attr("parts").unwrap_or_default().split_whitespace() {
                        if !parts.contains(part) {
                            out.push(format!(
                                "{file}: {op_name} {}: body part {part} does not exist",
                                io.local
                            ));
                        }
                    }
                }
            }
        }
    }
}

/// Body parts of each official message: the parts named by `soap:body parts=` wherever it is used.
fn body_parts(wsdl: &Node) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let port_types = by_name(wsdl, WSDL, "portType");
    for binding in wsdl.kids_named(WSDL, "binding") {
        let Some(pt) = port_types.get(local_of(binding.attr("type").unwrap_or_default())) else {
            continue;
        };
        for op in binding.kids_named(WSDL, "operation") {
            let Some(abstract_op) = pt
                .kids_named(WSDL, "operation")
                .find(|o| o.attr("name") == op.attr("name"))
            else {
                continue;
            };
            for io in directions(op) {
                let Some(message) = abstract_op
                    .kid_named(WSDL, &io.local)
                    .and_then(|n| n.attr("message"))
                else {
                    continue;
                };
                for body in io.kids_named(SOAP_BINDING, "body") {
                    let parts = body
                        .attr("parts")
                        .unwrap_or_default()
                        .split_whitespace()
                        .map(String::from);
                    out.entry(local_of(message).to_string())
                        .or_default()
                        .extend(parts);
                }
            }
        }
    }
    out
}

fn compare_wsdl_message(
    name: &str,
    sub: &Node,
    off: &Node,
    body: &BTreeSet<String>,
    out: &mut Vec<String>,
) {
    let parts = |m: &Node| -> Vec<(String, String)> {
        m.kids_named(WSDL, "part")
            .map(|p| {
                (
                    p.attr("name").unwrap_or_default().into(),
                    p.attr("element").unwrap_or_default().into(),
                )
            })
            .collect()
    };
    let (sp, op) = (parts(sub), parts(off));
    let mut next = 0;
    for (part, element) in &sp {
        match op[next..].iter().position(|(n, _)| n == part) {
            Some(i) if op[next + i].1 == *element => next += i + 1,
            Some(i) => out.push(format!(
                "message {name}: part {part} is element {} here but {} officially",
                short(element),
                short(&op[next + i].1)
            )),
            None => out.push(format!(
                "message {name}: part {part} is not official (or out of order)"
            )),
        }
    }
    for part in body {
        if !sp.iter().any(|(n, _)| n == part) {
            out.push(format!("message {name}: body part {part} is missing"));
        }
    }
}

fn compare_binding_io(path: &str, sub: &Node, off: &Node, out: &mut Vec<String>) {
    let body = |n: &Node| n.kid_named(SOAP_BINDING, "body").map(|b| b.attrs.clone());
    if body(sub) != body(off) {
        out.push(format!("{path}: soap:body differs from the official one"));
    }
    for header in sub.kids_named(SOAP_BINDING, "header") {
        if !off
            .kids_named(SOAP_BINDING, "header")
            .any(|h| h.attrs == header.attrs)
        {
            out.push(format!(
                "{path}: soap:header part {} is not official",
                header.attr("part").unwrap_or_default()
            ));
        }
    }
}

fn compare_binding(sub: &Node, off: &Node, out: &mut Vec<String>) {
    let name = sub.attr("name").unwrap_or_default();
    if sub.attrs != off.attrs {
        out.push(format!(
            "binding {name}: attributes differ from the official binding"
        ));
    }
    let soap = |b: &Node| {
        b.kid_named(SOAP_BINDING, "binding")
            .map(|n| n.attrs.clone())
    };
    if soap(sub) != soap(off) {
        out.push(format!(
            "binding {name}: soap:binding differs from the official one"
        ));
    }
    for op in sub.kids_named(WSDL, "operation") {
        let op_name = op.attr("name").unwrap_or_default();
        let path = format!("binding {name} operation {op_name}");
        let Some(off_op) = off
            .kids_named(WSDL, "operation")
            .find(|o| o.attr("name") == Some(op_name))
        else {
            out.push(format!("{path}: not an official operation"));
            continue;
        };
        let action = |o: &Node| {
            o.kid_named(SOAP_BINDING, "operation")
                .map(|n| n.attrs.clone())
        };
        if action(op) != action(off_op) {
            out.push(format!(
                "{path}: soap:operation differs from the official one"
            ));
        }
        for io in ["input", "output"] {
            match (op.kid_named(WSDL, io), off_op.kid_named(WSDL, io)) {
                (Some(s), Some(o)) => compare_binding_io(&format!("{path} {io}"), s, o, out),
                (None, None) => {}
                _ => out.push(format!("{path}: {io} present on one side only")),
            }
        }
    }
}

fn compare_port_type(sub: &Node, off: &Node, out: &mut Vec<String>) {
    let name = sub.attr("name").unwrap_or_default();
    for op in sub.kids_named(WSDL, "operation") {
        let op_name = op.attr("name").unwrap_or_default();
        match off
            .kids_named(WSDL, "operation")
            .find(|o| o.attr("name") == Some(op_name))
        {
            None => out.push(format!("portType {name} operation {op_name}: not official")),
            Some(o) => {
                let io = |n: &Node| -> Vec<(String, BTreeMap<String, String>)> {
                    n.kids()
                        .map(|c| (c.local.clone(), c.attrs.clone()))
                        .collect()
                };
                if io(op) != io(o) {
                    out.push(format!(
                        "portType {name} operation {op_name}: input/output not official"
                    ));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Tests.

#[test]
fn schema_subset_is_a_faithful_trim_of_the_official_schema() {
    let Some(official) = official_dir("wsdl/*.xsd compared with the official EWS schema") else {
        return;
    };
    let official = load_schema(&official);
    let subset = load_schema(&subset_dir());
    let mut problems = Vec::new();

    for (file, root) in &subset.roots {
        let off_root = &official.roots[file];
        for key in [
            "targetNamespace",
            "elementFormDefault",
            "attributeFormDefault",
            "id",
        ] {
            if root.attr(key) != off_root.attr(key) {
                problems.push(format!(
                    "{file}: xs:schema {key} differs from the official one"
                ));
            }
        }
        for (prefix, ns) in &root.ns_decls {
            if off_root.ns_decls.get(prefix) != Some(ns) {
                problems.push(format!(
                    "{file}: prefix {prefix}: is bound differently than officially"
                ));
            }
        }
        for import in root.kids_named(XS, "import") {
            if !off_root
                .kids_named(XS, "import")
                .any(|o| o.attrs == import.attrs)
            {
                problems.push(format!(
                    "{file}: xs:import {:?} is not official",
                    import.attrs
                ));
            }
        }
        for c in root
            .kids()
            .filter(|c| c.attr("name").is_none() && !c.is(XS, "import"))
        {
            problems.push(format!("{file}: unexpected top-level <{}>", c.local));
        }
    }

    for (key, node) in &subset.components {
        match official.components.get(key) {
            Some(off) => compare_node(&component_label(key), node, off, &mut problems),
            None => problems.push(format!(
                "{}: not in the official schema",
                component_label(key)
            )),
        }
    }
    assert_no_problems(
        "wsdl/*.xsd compared with the official EWS schema",
        &problems,
    );
}

#[test]
fn schema_subset_is_closed_and_holds_nothing_unused() {
    let subset = load_schema(&subset_dir());
    let mut problems = Vec::new();
    let mut todo: Vec<ComponentKey> = ["services.wsdl", "notification.wsdl"]
        .iter()
        .flat_map(|f| part_elements(&parse_file(&subset_dir().join(f))))
        .map(|e| ("element".to_string(), e))
        .collect();
    let mut reached = BTreeSet::new();
    loop {
        while let Some(key) = todo.pop() {
            if !reached.insert(key.clone()) {
                continue;
            }
            let Some(node) = subset.components.get(&key) else {
                problems.push(format!(
                    "{} is used but not declared",
                    component_label(&key)
                ));
                continue;
            };
            for (candidates, target) in references(node) {
                match candidates
                    .into_iter()
                    .find(|k| subset.components.contains_key(k))
                {
                    Some(k) => todo.push(k),
                    None => problems.push(format!(
                        "{}: refers to {} which is not in the subset",
                        component_label(&key),
                        short(&target)
                    )),
                }
            }
        }
        // Members of a reachable substitution group are usable wherever their head is.
        let members: Vec<ComponentKey> = subset
            .components
            .iter()
            .filter(|(key, node)| {
                !reached.contains(*key)
                    && node
                        .attr("substitutionGroup")
                        .is_some_and(|h| reached.contains(&("element".to_string(), h.to_string())))
            })
            .map(|(key, _)| key.clone())
            .collect();
        if members.is_empty() {
            break;
        }
        todo.extend(members);
    }
    for key in subset.components.keys().filter(|k| !reached.contains(*k)) {
        problems.push(format!(
            "{}: not reachable from any WSDL message part",
            component_label(key)
        ));
    }
    problems.sort();
    problems.dedup();
    assert_no_problems("closure of wsdl/*.xsd", &problems);
}

#[test]
fn services_wsdl_is_a_trim_of_the_official_services_wsdl() {
    let subset = parse_file(&subset_dir().join("services.wsdl"));
    let schema = load_schema(&subset_dir());
    let mut problems = Vec::new();
    check_wsdl_consistency("services.wsdl", &subset, &schema, &mut problems);
    // Without the official file, the subset's own consistency is all that can be checked.
    if let Some(dir) = official_dir("wsdl/services.wsdl compared with the official services.wsdl") {
        compare_with_official_services(
            &subset,
            &parse_file(&dir.join("services.wsdl")),
            &mut problems,
        );
    }
    assert_no_problems(
        "wsdl/services.wsdl compared with the official services.wsdl",
        &problems,
    );
}

/// The official-file half of the services.wsdl check.
fn compare_with_official_services(subset: &Node, official: &Node, problems: &mut Vec<String>) {
    for (attr, value) in &subset.attrs {
        if official.attr(attr) != Some(value.as_str()) {
            problems.push(format!(
                "wsdl:definitions {attr} differs from the official one"
            ));
        }
    }
    let imports = |w: &Node| -> Vec<BTreeMap<String, String>> {
        w.kids_named(WSDL, "types")
            .flat_map(|t| t.descendants())
            .filter(|n| n.is(XS, "import"))
            .map(|n| n.attrs.clone())
            .collect()
    };
    if imports(subset) != imports(official) {
        problems.push("wsdl:types imports differ from the official ones".to_string());
    }

    let official_messages = by_name(official, WSDL, "message");
    let official_body_parts = body_parts(official);
    for (name, message) in by_name(subset, WSDL, "message") {
        match official_messages.get(&name) {
            Some(off) => {
                let body = official_body_parts.get(&name).cloned().unwrap_or_default();
                compare_wsdl_message(&name, message, off, &body, problems);
            }
            None => problems.push(format!("message {name}: not in the official services.wsdl")),
        }
    }
    let official_port_types = by_name(official, WSDL, "portType");
    for (name, pt) in by_name(subset, WSDL, "portType") {
        match official_port_types.get(&name) {
            Some(off) => compare_port_type(pt, off, problems),
            None => problems.push(format!(
                "portType {name}: not in the official services.wsdl"
            )),
        }
    }
    let official_bindings = by_name(official, WSDL, "binding");
    for (name, binding) in by_name(subset, WSDL, "binding") {
        match official_bindings.get(&name) {
            Some(off) => compare_binding(binding, off, problems),
            None => problems.push(format!("binding {name}: not in the official services.wsdl")),
        }
    }
    // The official file has no wsdl:service (the URL comes from Autodiscover); a placeholder is allowed.
    let bindings: BTreeSet<String> = by_name(subset, WSDL, "binding").into_keys().collect();
    for port in subset
        .kids_named(WSDL, "service")
        .flat_map(|s| s.kids_named(WSDL, "port"))
    {
        if !bindings.contains(local_of(port.attr("binding").unwrap_or_default())) {
            problems
                .push("wsdl:service: the placeholder port does not use our binding".to_string());
        }
    }
    for c in subset.kids() {
        if !["types", "message", "portType", "binding", "service"].contains(&c.local.as_str())
            || c.ns != WSDL
        {
            problems.push(format!("unexpected top-level <{}>", c.local));
        }
    }
}

#[test]
fn notification_wsdl_describes_send_notification() {
    let wsdl = parse_file(&subset_dir().join("notification.wsdl"));
    let schema = load_schema(&subset_dir());
    let mut problems = Vec::new();
    check_wsdl_consistency("notification.wsdl", &wsdl, &schema, &mut problems);

    // [MS-OXWSPSNTIF] 3.1.4.1: SendNotificationSoapIn (body `request` + RequestVersion header) answered by
    // SendNotificationSoapOut (body SendNotificationResult).
    let expect_part = |message: &str, part: &str, element: &str, problems: &mut Vec<String>| {
        let found = by_name(&wsdl, WSDL, "message").get(message).and_then(|m| {
            m.kids_named(WSDL, "part")
                .find(|p| p.attr("name") == Some(part))
                .and_then(|p| p.attr("element").map(String::from))
        });
        if found.as_deref() != Some(element) {
            problems.push(format!(
                "message {message}: part {part} should be element {}",
                short(element)
            ));
        }
    };
    expect_part(
        "SendNotificationSoapIn",
        "request",
        &clark(EWS_MESSAGES, "SendNotification"),
        &mut problems,
    );
    expect_part(
        "SendNotificationSoapIn",
        "RequestVersion",
        &clark(EWS_TYPES, "RequestServerVersion"),
        &mut problems,
    );
    expect_part(
        "SendNotificationSoapOut",
        "SendNotificationResult",
        &clark(EWS_MESSAGES, "SendNotificationResult"),
        &mut problems,
    );

    let action = wsdl
        .kids_named(WSDL, "binding")
        .find(|b| b.attr("name") == Some("NotificationServiceBinding"))
        .filter(|b| {
            b.attr("type") == Some(clark(EWS_MESSAGES, "NotificationServicePortType").as_str())
        })
        .and_then(|b| {
            b.kids_named(WSDL, "operation")
                .find(|o| o.attr("name") == Some("SendNotification"))
        })
        .and_then(|o| o.kid_named(SOAP_BINDING, "operation"))
        .and_then(|o| o.attr("soapAction").map(String::from));
    if action.as_deref()
        != Some("http://schemas.microsoft.com/exchange/services/2006/messages/SendNotification")
    {
        problems.push(format!(
            "NotificationServiceBinding/SendNotification soapAction is {action:?}"
        ));
    }
    assert_no_problems("wsdl/notification.wsdl", &problems);
}

#[test]
fn samples_validate_against_the_subset_and_the_official_schema() {
    let mut samples: Vec<PathBuf> = std::fs::read_dir(subset_dir().join("samples"))
        .expect("wsdl/samples/ should exist")
        .map(|entry| entry.expect("readable wsdl/samples/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    samples.sort();
    assert!(!samples.is_empty(), "wsdl/samples/ holds no *.xml sample");
    external::assert_well_formed(&samples);

    let what = "wsdl/samples/*.xml against the schema";
    if !external::schema_tools(what) {
        return;
    }
    let mut validators = vec![subset_dir().join("validate.sh")];
    validators.extend(official_root(what).map(|root| root.join("validate.sh")));
    let problems: Vec<String> = validators
        .iter()
        .filter_map(|script| external::validate(script, &samples).err())
        .collect();
    assert_no_problems("wsdl/samples/*.xml", &problems);
}
