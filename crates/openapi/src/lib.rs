//! The OpenAPI 3 documents of the services' HTTP routes share one way of describing the gRPC
//! messages they answer with (or read): each message's JSON schema is generated here from the
//! proto descriptors of the `api` crate, as the proto3 JSON mapping that `pbjson-build`
//! implements, and [`check_document`] (each service's unit test) keeps a document's
//! `components.schemas` equal to them. `UPDATE_OPENAPI=1 cargo test -p <service> --lib openapi`
//! rewrites them after a `.proto` change.
//!
//! The paths, parameters, errors and the schemas of answers that are not proto messages are
//! written by hand in each document; every service's running server is checked against its
//! document by schemathesis (`tests/tests/it/openapi.rs`, `services/projection/tests/it/
//! openapi.rs`), which is what shows the hand-written parts true.
//!
//! The mapping as stated (answers): lowerCamelCase names; every field present with its
//! default (`0`, `""`, `false`, `[]`, the first enum value) but an absent message or `optional`
//! field or a oneof member, which is left out; 64-bit integers as decimal strings; enums by
//! name; `google.protobuf.Timestamp` as an RFC 3339 string; `bytes` as base64; a message made of
//! one oneof holds exactly one field. Requests: every field may be left out (its default), no
//! other field is accepted; a request message must not hold another message but a timestamp
//! (a bound of this generator, checked).

use std::collections::BTreeSet;
use std::path::Path;

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use serde_json::{Map, Value, json};

const PACKAGE: &str = ".dossier.v1.";
const TIMESTAMP: &str = ".google.protobuf.Timestamp";

/// The environment variable that makes [`check_document`] rewrite the file instead.
pub const UPDATE: &str = "UPDATE_OPENAPI";

/// What a document's generated schemas start from: the messages the routes answer with and
/// those they read as a body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Roots<'a> {
    /// Answers, and every message and enum they reach.
    pub answers: &'a [&'a str],
    /// Request bodies (their enums are reached too).
    pub requests: &'a [&'a str],
}

struct Descriptors {
    messages: Vec<DescriptorProto>,
    enums: Vec<EnumDescriptorProto>,
}

impl Descriptors {
    fn load() -> Descriptors {
        let set = FileDescriptorSet::decode(api::FILE_DESCRIPTOR_SET)
            .expect("the api crate's descriptor set decodes");
        let files = set.file.into_iter().filter(|f| f.package() == "dossier.v1");
        let (mut messages, mut enums) = (Vec::new(), Vec::new());
        for f in files {
            messages.extend(f.message_type);
            enums.extend(f.enum_type);
        }
        Descriptors { messages, enums }
    }

    fn message(&self, name: &str) -> &DescriptorProto {
        self.messages
            .iter()
            .find(|m| m.name() == name)
            .unwrap_or_else(|| panic!("no message {name} in dossier.v1"))
    }

    fn enumeration(&self, name: &str) -> Option<&EnumDescriptorProto> {
        self.enums.iter().find(|e| e.name() == name)
    }
}

/// The JSON schema of every message and enum reachable from `roots`, by name.
///
/// # Panics
/// When a root names no message of `dossier.v1`, a field refers outside the package (but a
/// timestamp), or a request holds a message.
pub fn message_schemas(roots: Roots<'_>) -> Map<String, Value> {
    let d = Descriptors::load();
    let mut out = Map::new();
    for name in roots.requests {
        let m = d.message(name);
        let mut properties = Map::new();
        for f in &m.field {
            let (schema, reaches) = field_schema(f);
            if let Some(reached) = reaches {
                assert!(
                    d.enumeration(&reached).is_some(),
                    "request {name} holds the message {reached}: requests are described flat"
                );
                out.insert(reached.clone(), enum_schema(&d, &reached));
            }
            properties.insert(f.json_name().to_owned(), schema);
        }
        out.insert(
            (*name).to_owned(),
            json!({"type": "object", "additionalProperties": false, "properties": properties}),
        );
    }
    let mut todo: Vec<String> = roots.answers.iter().map(|s| (*s).to_owned()).collect();
    let mut seen = BTreeSet::new();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if d.enumeration(&name).is_some() {
            out.insert(name.clone(), enum_schema(&d, &name));
            continue;
        }
        let m = d.message(&name);
        let mut properties = Map::new();
        let mut required = Vec::new();
        for f in &m.field {
            let (schema, reaches) = field_schema(f);
            todo.extend(reaches);
            let in_oneof = f.oneof_index.is_some() && !f.proto3_optional();
            let absent_when_unset = f.proto3_optional()
                || in_oneof
                || (f.r#type() == Type::Message && f.label() != Label::Repeated);
            if !absent_when_unset {
                required.push(Value::from(f.json_name()));
            }
            properties.insert(f.json_name().to_owned(), schema);
        }
        let mut schema = json!({
            "type": "object",
            "additionalProperties": false,
            "properties": properties,
        });
        if !required.is_empty() {
            schema["required"] = Value::Array(required);
        }
        // A message made of one oneof (Cell): exactly one of its fields.
        if !m.oneof_decl.is_empty() && m.field.iter().all(|f| f.oneof_index == Some(0)) {
            schema["minProperties"] = json!(1);
            schema["maxProperties"] = json!(1);
        }
        out.insert(name, schema);
    }
    out
}

fn enum_schema(d: &Descriptors, name: &str) -> Value {
    let e = d
        .enumeration(name)
        .unwrap_or_else(|| panic!("no enum {name} in dossier.v1"));
    let names: Vec<&str> = e.value.iter().map(|v| v.name()).collect();
    json!({"type": "string", "enum": names})
}

/// A field's schema and the message or enum name it refers to.
fn field_schema(f: &FieldDescriptorProto) -> (Value, Option<String>) {
    let mut reaches = None;
    let mut by_name = |type_name: &str| {
        let name = type_name
            .strip_prefix(PACKAGE)
            .unwrap_or_else(|| panic!("{type_name} is outside dossier.v1"));
        reaches = Some(name.to_owned());
        json!({"$ref": format!("#/components/schemas/{name}")})
    };
    let one = match f.r#type() {
        Type::Int64 | Type::Sint64 | Type::Sfixed64 => {
            json!({"type": "string", "pattern": "^-?[0-9]+$"})
        }
        Type::Uint64 | Type::Fixed64 => json!({"type": "string", "pattern": "^[0-9]+$"}),
        Type::Int32 | Type::Sint32 | Type::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Type::Uint32 | Type::Fixed32 => {
            json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX})
        }
        Type::Double | Type::Float => json!({"type": "number"}),
        Type::Bool => json!({"type": "boolean"}),
        Type::String => json!({"type": "string"}),
        Type::Bytes => json!({"type": "string", "format": "byte"}),
        Type::Message if f.type_name() == TIMESTAMP => {
            json!({"type": "string", "format": "date-time"})
        }
        Type::Message | Type::Enum => by_name(f.type_name()),
        Type::Group => panic!("groups are not proto3"),
    };
    let schema = if f.label() == Label::Repeated {
        json!({"type": "array", "items": one})
    } else {
        one
    };
    (schema, reaches)
}

/// Every local `$ref` of `doc` that does not resolve (`#/…` pointers only; others are listed).
pub fn unresolved_references(doc: &Value) -> Vec<String> {
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(doc, &mut all);
    all.into_iter()
        .filter(|r| {
            r.strip_prefix('#')
                .is_none_or(|pointer| doc.pointer(pointer).is_none())
        })
        .collect()
}

/// Checks a service's document (`text`, the file `file` of the crate at `manifest_dir`): it is
/// JSON, OpenAPI 3.0, every `$ref` resolves, and its `components.schemas` hold exactly the
/// generated schemas of `roots` (other, hand-written schemas are left alone). With
/// `UPDATE_OPENAPI` set it rewrites the file with the generated schemas instead (and then
/// checks the references).
///
/// # Errors
/// What differs, with the command that rewrites the file.
pub fn check_document(
    manifest_dir: &str,
    file: &str,
    text: &str,
    roots: Roots<'_>,
) -> Result<(), String> {
    let mut doc: Value =
        serde_json::from_str(text).map_err(|e| format!("{file} is not JSON: {e}"))?;
    if !doc["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.0"))
    {
        return Err(format!("{file}: `openapi` must be 3.0.x"));
    }
    let generated = message_schemas(roots);
    let crate_name = Path::new(manifest_dir)
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    if std::env::var_os(UPDATE).is_some() {
        let schemas = doc["components"]["schemas"]
            .as_object_mut()
            .ok_or_else(|| format!("{file}: no components.schemas object"))?;
        for (name, schema) in &generated {
            schemas.insert(name.clone(), schema.clone());
        }
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())? + "\n";
        std::fs::write(Path::new(manifest_dir).join(file), text)
            .map_err(|e| format!("writing {file}: {e}"))?;
    } else {
        let differing: Vec<&String> = generated
            .iter()
            .filter(|(name, schema)| doc["components"]["schemas"][name.as_str()] != **schema)
            .map(|(name, _)| name)
            .collect();
        if !differing.is_empty() {
            return Err(format!(
                "{file}: components.schemas {differing:?} differ from the proto: run \
                 `UPDATE_OPENAPI=1 cargo test -p {crate_name} --lib openapi`"
            ));
        }
    }
    let unresolved = unresolved_references(&doc);
    if !unresolved.is_empty() {
        return Err(format!(
            "{file}: references that do not resolve: {unresolved:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWERS: Roots<'static> = Roots {
        answers: &["GetIndicatorsResponse", "Report", "DossierStatus"],
        requests: &["LookUpDossierRequest"],
    };

    /// The mapping's rules as the schema states them.
    #[test]
    fn the_schemas_state_the_proto3_json_mapping() {
        let s = message_schemas(ANSWERS);
        let rate = &s["Rate"];
        assert_eq!(rate["properties"]["numerator"]["type"], "string");
        assert_eq!(rate["required"], json!(["numerator", "denominator"]));
        assert_eq!(
            s["GroupValue"]["properties"]["dimension"]["$ref"],
            "#/components/schemas/Dimension"
        );
        assert_eq!(s["Dimension"]["enum"][1], "DIMENSION_LEVEL");
        assert_eq!(
            s["DossierStatus"]["properties"]["dueAt"]["format"],
            "date-time"
        );
        assert_eq!(s["Cell"]["maxProperties"], 1);
        assert!(s.contains_key("Profile") && s.contains_key("Timeliness"));
        // A request: every field may be left out, no other is accepted.
        let lookup = &s["LookUpDossierRequest"];
        assert_eq!(lookup["additionalProperties"], false);
        assert!(lookup.get("required").is_none(), "{lookup}");
        assert_eq!(lookup["properties"]["dossierId"]["type"], "string");
    }

    #[test]
    fn unsigned_and_optional_fields() {
        let s = message_schemas(Roots {
            answers: &["LookUpDossierResponse", "ListDueSoonResponse"],
            requests: &[],
        });
        let lookup = &s["LookUpDossierResponse"];
        assert_eq!(lookup["properties"]["status"]["maximum"], u32::MAX);
        // An absent message (the due time) is left out: not required.
        assert_eq!(
            lookup["required"],
            json!(["status", "resultReady", "returnMethod"])
        );
        assert_eq!(
            s["ListDueSoonResponse"]["properties"]["warnings"]["items"]["$ref"],
            "#/components/schemas/DueSoon"
        );
        assert!(s.contains_key("ReturnMethod"));
    }

    #[test]
    #[should_panic(expected = "requests are described flat")]
    fn a_request_holding_a_message_is_refused() {
        message_schemas(Roots {
            answers: &[],
            requests: &["Report"],
        });
    }

    #[test]
    fn unresolved_references_are_listed() {
        let doc = json!({
            "a": {"$ref": "#/components/schemas/A"},
            "b": [{"$ref": "#/components/schemas/B"}],
            "components": {"schemas": {"A": {}}},
        });
        assert_eq!(unresolved_references(&doc), ["#/components/schemas/B"]);
    }

    /// A document whose generated schema was edited by hand is refused, naming it.
    #[test]
    fn a_stale_document_is_refused() {
        if std::env::var_os(UPDATE).is_some() {
            return; // it would write the fake crate's file
        }
        let mut schemas = message_schemas(Roots {
            answers: &["DossierStatus"],
            requests: &[],
        });
        let mut doc = json!({"openapi": "3.0.3", "components": {"schemas": schemas.clone()}});
        assert_eq!(
            check_document(
                "/nowhere/x",
                "openapi.json",
                &doc.to_string(),
                Roots {
                    answers: &["DossierStatus"],
                    requests: &[],
                }
            ),
            Ok(())
        );
        schemas["DossierStatus"]["properties"]["dueAt"] = json!({"type": "string"});
        doc["components"]["schemas"] = Value::Object(schemas);
        let refused = check_document(
            "/nowhere/x",
            "openapi.json",
            &doc.to_string(),
            Roots {
                answers: &["DossierStatus"],
                requests: &[],
            },
        )
        .unwrap_err();
        assert!(
            refused.contains("DossierStatus") && refused.contains("-p x"),
            "{refused}"
        );
    }
}
