//! A reader of the parts of XML Schema that our `wsdl/` subset uses for the wire types: named
//! complex types (sequences, single-element choices, extensions, attributes, attribute groups),
//! simple types (enumerations and restrictions of built-in types) and top-level elements.
//!
//! It is not a general XSD reader: anything the subset does not use is left out, and the wire
//! type generator refuses a schema construct it cannot express rather than guess.

use std::collections::BTreeMap;

use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

/// How often an element may occur.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Occurs {
    /// `minOccurs`.
    pub min: u32,
    /// `maxOccurs`, `None` for `unbounded`.
    pub max: Option<u32>,
}

/// One element of a complex type's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Particle {
    /// The element's local name.
    pub name: String,
    /// Its type as written (`t:ItemIdType`, `xs:string`); `None` for an anonymous type.
    pub ty: Option<String>,
    /// Its occurrence, with those of the groups around it folded in.
    pub occurs: Occurs,
    /// Whether it is one of several alternatives of a choice (which `xml_struct!` cannot say).
    pub in_choice_of_many: bool,
}

/// One attribute of a complex type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    /// The attribute name.
    pub name: String,
    /// Its type as written.
    pub ty: String,
    /// `use="required"`.
    pub required: bool,
}

/// A named complex type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ComplexType {
    /// The extended base type, if any.
    pub base: Option<String>,
    /// The elements this type declares itself, in schema order.
    pub particles: Vec<Particle>,
    /// The attributes this type declares itself (attribute groups resolved).
    pub attributes: Vec<Attribute>,
    /// Attribute group references, resolved after reading.
    pub attribute_groups: Vec<String>,
}

/// A named simple type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimpleType {
    /// The restricted base type.
    pub base: String,
    /// The enumeration values, in schema order (empty when it only restricts a range).
    pub values: Vec<String>,
    /// `minInclusive`, if any.
    pub min: Option<String>,
    /// `maxInclusive`, if any.
    pub max: Option<String>,
}

/// The named types and top-level elements of one or more schema documents, keyed by
/// prefixed name (`t:ItemIdType`, `m:GetItemType`).
#[derive(Debug, Default)]
pub struct Schema {
    /// Complex types.
    pub complex: BTreeMap<String, ComplexType>,
    /// Simple types.
    pub simple: BTreeMap<String, SimpleType>,
    /// Top-level elements: name -> type.
    pub elements: BTreeMap<String, String>,
    attribute_groups: BTreeMap<String, Vec<Attribute>>,
}

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().into_inner() == name)
        .and_then(|a| {
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        })
}

fn occurs(e: &BytesStart<'_>) -> Result<Occurs, String> {
    let min = match attr(e, "minOccurs") {
        None => 1,
        Some(v) => v.parse().map_err(|_| format!("bad minOccurs {v}"))?,
    };
    let max = match attr(e, "maxOccurs").as_deref() {
        None => Some(1),
        Some("unbounded") => None,
        Some(v) => Some(v.parse().map_err(|_| format!("bad maxOccurs {v}"))?),
    };
    Ok(Occurs { min, max })
}

/// The elements of a type with the prefix of the type declaring each, and its attributes.
pub type Content = (Vec<(String, Particle)>, Vec<Attribute>);

/// A model group open while reading a complex type.
struct Group {
    occurs: Occurs,
    choice: bool,
    /// Number of element alternatives (for a choice).
    first_particle: usize,
}

impl Schema {
    /// Reads a schema document whose target namespace is written with `prefix`.
    pub fn read(&mut self, xsd: &str, prefix: &str) -> Result<(), String> {
        let mut reader = Reader::from_str(xsd);
        // Depth of the schema element's children we are in; 1 = top level.
        let mut depth = 0usize;
        let mut current_complex: Option<(String, ComplexType)> = None;
        let mut current_simple: Option<(String, SimpleType)> = None;
        let mut current_group: Option<(String, Vec<Attribute>)> = None;
        let mut groups: Vec<Group> = Vec::new();
        // Depth at which an element with an anonymous type began: its content is not ours.
        let mut skip_below: Option<usize> = None;
        // A top-level element declared with an anonymous complex type (`ServerVersionInfo`):
        // the type is read under the element's own name (`t:ServerVersionInfo`).
        let mut anonymous_top: Option<String> = None;
        loop {
            let event = reader
                .read_event()
                .map_err(|e| format!("schema is not well-formed: {e}"))?;
            let (e, empty) = match &event {
                Event::Start(e) => (e.clone(), false),
                Event::Empty(e) => (e.clone(), true),
                Event::End(e) => {
                    let local = e.local_name().into_inner().to_string();
                    if skip_below == Some(depth) {
                        skip_below = None;
                    }
                    if local == "complexType" && depth == 3 && anonymous_top.is_some() {
                        if let Some((name, c)) = current_complex.take()
                            && self.complex.insert(name.clone(), c).is_some()
                        {
                            return Err(format!("{name} is declared twice"));
                        }
                    } else if local == "element" && depth == 2 {
                        anonymous_top = None;
                    } else if skip_below.is_none() {
                        self.close(
                            local.as_str(),
                            depth,
                            &mut current_complex,
                            &mut current_simple,
                            &mut current_group,
                            &mut groups,
                        )?;
                    }
                    depth -= 1;
                    continue;
                }
                Event::Eof => break,
                _ => continue,
            };
            depth += 1;
            let local = e.local_name().into_inner().to_string();
            if local == "element" && depth == 2 && !empty && attr(&e, "type").is_none() {
                anonymous_top = attr(&e, "name").map(|name| format!("{prefix}:{name}"));
            }
            if local == "complexType"
                && depth == 3
                && current_complex.is_none()
                && let Some(name) = &anonymous_top
            {
                if empty {
                    self.complex.insert(name.clone(), ComplexType::default());
                    depth -= 1;
                } else {
                    current_complex = Some((name.clone(), ComplexType::default()));
                }
                continue;
            }
            if skip_below.is_none() {
                self.open(
                    &e,
                    &local,
                    depth,
                    prefix,
                    &mut current_complex,
                    &mut current_simple,
                    &mut current_group,
                    &mut groups,
                )?;
                if local == "element" && depth > 2 && !empty && current_complex.is_some() {
                    skip_below = Some(depth);
                }
            }
            if empty {
                if skip_below == Some(depth) {
                    skip_below = None;
                }
                if skip_below.is_none() {
                    self.close(
                        local.as_str(),
                        depth,
                        &mut current_complex,
                        &mut current_simple,
                        &mut current_group,
                        &mut groups,
                    )?;
                }
                depth -= 1;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        e: &BytesStart<'_>,
        local: &str,
        depth: usize,
        prefix: &str,
        complex: &mut Option<(String, ComplexType)>,
        simple: &mut Option<(String, SimpleType)>,
        group: &mut Option<(String, Vec<Attribute>)>,
        groups: &mut Vec<Group>,
    ) -> Result<(), String> {
        let qualified = |name: String| format!("{prefix}:{name}");
        match local {
            "complexType" if depth == 2 => {
                let name = attr(e, "name").ok_or("a top-level complexType without a name")?;
                *complex = Some((qualified(name), ComplexType::default()));
            }
            "simpleType" if depth == 2 => {
                let name = attr(e, "name").ok_or("a top-level simpleType without a name")?;
                *simple = Some((qualified(name), SimpleType::default()));
            }
            "attributeGroup" if depth == 2 => {
                let name = attr(e, "name").ok_or("an attributeGroup without a name")?;
                *group = Some((qualified(name), Vec::new()));
            }
            "element" if depth == 2 => {
                if let (Some(name), Some(ty)) = (attr(e, "name"), attr(e, "type")) {
                    self.elements.insert(name, ty);
                }
            }
            "restriction" => {
                if let Some((_, s)) = simple {
                    s.base = attr(e, "base").unwrap_or_default();
                }
            }
            "minInclusive" | "maxInclusive" => {
                if let Some((_, s)) = simple.as_mut() {
                    let bound = attr(e, "value");
                    if local == "minInclusive" {
                        s.min = bound;
                    } else {
                        s.max = bound;
                    }
                }
            }
            "enumeration" => {
                if let (Some((_, s)), Some(v)) = (simple.as_mut(), attr(e, "value")) {
                    s.values.push(v);
                }
            }
            "extension" => {
                if let Some((_, c)) = complex {
                    c.base = attr(e, "base");
                }
            }
            "sequence" | "choice" => {
                if let Some((_, c)) = complex {
                    groups.push(Group {
                        occurs: occurs(e)?,
                        choice: local == "choice",
                        first_particle: c.particles.len(),
                    });
                }
            }
            "element" if complex.is_some() => {
                {
                    // An element reference (`ref="t:Path"`, a substitution group head) has no
                    // type here; the generator refuses it if a type it emits holds one.
                    let reference = attr(e, "ref")
                        .map(|r| r.rsplit(':').next().unwrap_or_default().to_string());
                    let name = attr(e, "name").or(reference).ok_or_else(|| {
                        format!("an element without a name in {}", c_name(complex))
                    })?;
                    let mut occ = occurs(e)?;
                    for g in groups.iter() {
                        occ.min *= g.occurs.min;
                        occ.max = match (occ.max, g.occurs.max) {
                            (Some(a), Some(b)) => Some(a * b),
                            _ => None,
                        };
                    }
                    if let Some((_, c)) = complex {
                        c.particles.push(Particle {
                            name,
                            ty: attr(e, "type"),
                            occurs: occ,
                            in_choice_of_many: false,
                        });
                    }
                }
            }
            "attribute" => {
                let a = Attribute {
                    name: attr(e, "name").unwrap_or_default(),
                    ty: attr(e, "type").unwrap_or_else(|| "xs:string".into()),
                    required: attr(e, "use").as_deref() == Some("required"),
                };
                if let Some((_, c)) = complex {
                    c.attributes.push(a);
                } else if let Some((_, g)) = group {
                    g.push(a);
                }
            }
            "attributeGroup" => {
                if let (Some((_, c)), Some(r)) = (complex.as_mut(), attr(e, "ref")) {
                    c.attribute_groups.push(r);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn close(
        &mut self,
        local: &str,
        depth: usize,
        complex: &mut Option<(String, ComplexType)>,
        simple: &mut Option<(String, SimpleType)>,
        group: &mut Option<(String, Vec<Attribute>)>,
        groups: &mut Vec<Group>,
    ) -> Result<(), String> {
        match local {
            "complexType" if depth == 2 => {
                if let Some((name, c)) = complex.take() {
                    self.complex.insert(name, c);
                }
            }
            "simpleType" if depth == 2 => {
                if let Some((name, s)) = simple.take() {
                    self.simple.insert(name, s);
                }
            }
            "attributeGroup" if depth == 2 => {
                if let Some((name, g)) = group.take() {
                    self.attribute_groups.insert(name, g);
                }
            }
            "sequence" | "choice" => {
                if let (Some((_, c)), Some(g)) = (complex.as_mut(), groups.pop()) {
                    let members = &mut c.particles[g.first_particle..];
                    if g.choice && members.len() > 1 {
                        for p in members {
                            p.in_choice_of_many = true;
                            p.occurs.min = 0;
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Resolves attribute group references; call once after reading every document.
    pub fn resolve(&mut self) -> Result<(), String> {
        for (name, c) in self.complex.iter_mut() {
            for g in std::mem::take(&mut c.attribute_groups) {
                let attrs = self
                    .attribute_groups
                    .get(&g)
                    .ok_or_else(|| format!("{name}: attribute group {g} is not defined"))?;
                c.attributes.extend(attrs.iter().cloned());
            }
        }
        Ok(())
    }

    /// The elements of `ty` with those of its base types first, stopping at `stop` (whose own
    /// elements are left out), and the attributes likewise. Each element comes with the prefix
    /// of the type that declares it (its namespace).
    pub fn content(&self, ty: &str, stop: Option<&str>) -> Result<Content, String> {
        let c = self
            .complex
            .get(ty)
            .ok_or_else(|| format!("complex type {ty} is not in the schema"))?;
        let (mut particles, mut attributes) = match c.base.as_deref() {
            Some(base) if Some(base) != stop => self.content(base, stop)?,
            _ => (Vec::new(), Vec::new()),
        };
        let prefix = ty.split(':').next().unwrap_or("t").to_string();
        particles.extend(c.particles.iter().map(|p| (prefix.clone(), p.clone())));
        attributes.extend(c.attributes.iter().cloned());
        Ok((particles, attributes))
    }

    /// Whether `ty` is `ancestor` or extends it.
    pub fn extends(&self, ty: &str, ancestor: &str) -> bool {
        let mut current = Some(ty.to_string());
        while let Some(t) = current {
            if t == ancestor {
                return true;
            }
            current = self.complex.get(&t).and_then(|c| c.base.clone());
        }
        false
    }
}

fn c_name(c: &Option<(String, ComplexType)>) -> String {
    c.as_ref().map(|(n, _)| n.clone()).unwrap_or_default()
}
