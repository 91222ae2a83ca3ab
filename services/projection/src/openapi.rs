//! The OpenAPI 3 description of the HTTP routes (`services/projection/openapi.json`, served at
//! `GET /openapi.json`). The paths, parameters and errors are written by hand; the schemas of
//! the answers' messages are generated from the proto descriptors by [`message_schemas`] (the
//! proto3 JSON mapping that `pbjson-build` implements), and a unit test keeps the file equal to
//! them: `UPDATE_OPENAPI=1 cargo test -p projection --lib openapi` rewrites them after a
//! `.proto` change. The integration test `openapi` checks the running server against the file
//! with schemathesis.

use std::collections::BTreeSet;

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use serde_json::{Map, Value, json};

/// The document, as served.
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// The messages the routes answer with; their schemas and those of every message and enum they
/// reach are generated.
pub const ROOTS: [&str; 3] = ["GetIndicatorsResponse", "Report", "DossierStatus"];

const PACKAGE: &str = ".dossier.v1.";
const TIMESTAMP: &str = ".google.protobuf.Timestamp";

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
}

/// The JSON schema of every message and enum reachable from [`ROOTS`], by name: the proto3
/// JSON mapping with every field emitted but absent messages and `optional` fields.
pub fn message_schemas() -> Map<String, Value> {
    let d = Descriptors::load();
    let mut out = Map::new();
    let mut todo: Vec<String> = ROOTS.iter().map(|s| (*s).to_owned()).collect();
    let mut seen = BTreeSet::new();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(e) = d.enums.iter().find(|e| e.name() == name) {
            let names: Vec<&str> = e.value.iter().map(|v| v.name()).collect();
            out.insert(name, json!({"type": "string", "enum": names}));
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

/// A field's schema and the message or enum names it refers to.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
    }

    /// The file's message schemas are the generated ones; `UPDATE_OPENAPI=1` rewrites them.
    #[test]
    fn openapi_message_schemas_match_the_proto_descriptors() {
        let mut doc = document();
        let generated = message_schemas();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            let schemas = doc["components"]["schemas"]
                .as_object_mut()
                .expect("components.schemas");
            for (name, schema) in &generated {
                schemas.insert(name.clone(), schema.clone());
            }
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
            let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
            std::fs::write(path, text).expect("write openapi.json");
            return;
        }
        for (name, schema) in &generated {
            assert_eq!(
                &doc["components"]["schemas"][name], schema,
                "components.schemas.{name} differs from the proto: run \
                 `UPDATE_OPENAPI=1 cargo test -p projection --lib openapi`"
            );
        }
    }

    /// Every `$ref` of the document resolves.
    #[test]
    fn every_reference_resolves() {
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
        let doc = document();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 20, "{all:?}");
        for r in all {
            let pointer = r.strip_prefix('#').expect("local reference");
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }

    /// The mapping's rules as the schema states them, on messages the routes answer.
    #[test]
    fn the_schemas_state_the_proto3_json_mapping() {
        let s = message_schemas();
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
    }
}
