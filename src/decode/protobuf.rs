//! Protobuf payloads → JSON text, through a descriptor pool built from the registry's schema.
//!
//! Registries hold a Protobuf schema either as `.proto` source or as a base64-encoded
//! `FileDescriptorProto` (what some serializers register); both are accepted, for the
//! schema and for each import it references. Well-known imports (`google/protobuf/*.proto`)
//! need no reference. Output follows the proto3 JSON mapping with field names as written in
//! the `.proto` file, 64-bit integers as numbers, and fields at their defaults included, so
//! that paths in the config name the same fields whatever the producer left unset.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FileDescriptor, MessageDescriptor, SerializeOptions,
};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use super::schema::SchemaText;
use super::wire;

/// The name the schema itself is compiled under when it comes as source.
const MAIN_FILE: &str = "freshet/registry-schema.proto";

/// A compiled Protobuf schema: the file whose messages payloads are written with.
#[derive(Debug)]
pub struct ProtoSchema {
    file: FileDescriptor,
}

impl ProtoSchema {
    /// Compiles a schema and its referenced imports (source or base64 descriptors).
    pub(crate) fn parse(text: &str, references: &[SchemaText]) -> Result<ProtoSchema, String> {
        let mut files = HashMap::new();
        for reference in references {
            files.insert(
                reference.name.clone(),
                file(&reference.name, &reference.text)?,
            );
        }
        let main = if files.contains_key(MAIN_FILE) {
            return Err(format!(
                "a reference is named `{MAIN_FILE}`, a name freshet reserves"
            ));
        } else {
            MAIN_FILE
        };
        files.insert(main.to_owned(), file(main, text)?);
        let mut resolver = ChainFileResolver::new();
        resolver.add(Files(files));
        resolver.add(GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler.include_imports(true);
        compiler.open_file(main).map_err(|e| e.to_string())?;
        let pool: DescriptorPool = compiler.descriptor_pool();
        let file = pool
            .get_file_by_name(main)
            .ok_or_else(|| "the compiled schema has no file".to_owned())?;
        if file.messages().len() == 0 {
            return Err("the schema defines no message".to_owned());
        }
        Ok(ProtoSchema { file })
    }

    /// Decodes a payload (message indexes, then the message) and renders it as JSON text.
    pub(crate) fn to_json(&self, payload: &[u8]) -> Result<String, String> {
        let (indexes, body) = wire::message_indexes(payload)?;
        let descriptor = self.message(&indexes)?;
        let message = DynamicMessage::decode(descriptor, body).map_err(|e| e.to_string())?;
        let options = SerializeOptions::new()
            .use_proto_field_name(true)
            .stringify_64_bit_integers(false)
            .skip_default_fields(false);
        let mut serializer = serde_json::Serializer::new(Vec::with_capacity(body.len() * 2));
        message
            .serialize_with_options(&mut serializer, &options)
            .map_err(|e| e.to_string())?;
        String::from_utf8(serializer.into_inner()).map_err(|e| e.to_string())
    }

    /// The first message of the file, for tests that encode payloads.
    #[cfg(test)]
    pub(crate) fn message_descriptor_for_tests(&self) -> MessageDescriptor {
        self.message(&[0]).expect("the schema has a message")
    }

    /// The message at `indexes`: top-level message, then nested messages.
    fn message(&self, indexes: &[usize]) -> Result<MessageDescriptor, String> {
        let missing = || format!("message indexes {indexes:?} name no message of the schema");
        let (first, nested) = indexes.split_first().ok_or_else(missing)?;
        let mut message = self.file.messages().nth(*first).ok_or_else(missing)?;
        for index in nested {
            let child = message.child_messages().nth(*index);
            message = child.ok_or_else(missing)?;
        }
        Ok(message)
    }
}

/// A schema text as a file: `.proto` source, or a base64 `FileDescriptorProto`.
fn file(name: &str, text: &str) -> Result<File, String> {
    let trimmed = text.trim();
    let looks_like_source = trimmed.contains(';') || trimmed.contains('{');
    if !looks_like_source && let Ok(bytes) = BASE64.decode(trimmed) {
        let mut descriptor = prost_types::FileDescriptorProto::decode(bytes.as_slice())
            .map_err(|e| format!("`{name}`: not a FileDescriptorProto: {e}"))?;
        descriptor.name = Some(name.to_owned());
        return Ok(File::from_file_descriptor_proto(descriptor));
    }
    File::from_source(name, text).map_err(|e| format!("`{name}`: {e}"))
}

/// The schema and its references, by import path.
struct Files(HashMap<String, File>);

impl FileResolver for Files {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| protox::Error::file_not_found(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::Value;

    const ARTICLE: &str = r#"
        syntax = "proto3";
        package shop;
        import "google/protobuf/timestamp.proto";
        import "author.proto";
        message Article {
          int64 id = 1;
          string title = 2;
          string body = 3;
          repeated string tags = 4;
          repeated float embedding = 5;
          google.protobuf.Timestamp updated_at = 6;
          Author author = 7;
          Status status = 8;
          map<string, int32> attrs = 9;
          message Note { string text = 1; }
        }
        enum Status { DRAFT = 0; LIVE = 1; }
    "#;

    const AUTHOR: &str = r#"syntax = "proto3"; package shop; message Author { string name = 1; }"#;

    fn author() -> SchemaText {
        SchemaText {
            name: "author.proto".into(),
            text: AUTHOR.into(),
        }
    }

    fn encoded(schema: &ProtoSchema, indexes: &[u8]) -> Vec<u8> {
        let descriptor = schema.message(&[0]).expect("Article");
        let mut message = DynamicMessage::new(descriptor.clone());
        message.set_field_by_name("id", Value::I64(9_007_199_254_740_993));
        message.set_field_by_name("title", Value::String("Pumps".into()));
        message.set_field_by_name(
            "embedding",
            Value::List(vec![Value::F32(0.5), Value::F32(-1.0)]),
        );
        let ts_desc = descriptor
            .get_field_by_name("updated_at")
            .and_then(|f| f.kind().as_message().cloned())
            .expect("timestamp");
        let mut ts = DynamicMessage::new(ts_desc);
        ts.set_field_by_name("seconds", Value::I64(1_704_067_200));
        ts.set_field_by_name("nanos", Value::I32(5_000_000));
        message.set_field_by_name("updated_at", Value::Message(ts));
        message.set_field_by_name("status", Value::EnumNumber(1));
        let mut out = indexes.to_vec();
        out.extend(message.encode_to_vec());
        out
    }

    #[test]
    fn decodes_with_imports_and_well_known_types() {
        let schema = ProtoSchema::parse(ARTICLE, &[author()]).expect("compiles");
        let json = schema.to_json(&encoded(&schema, &[0])).expect("decodes");
        let value: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        assert_eq!(value["id"], serde_json::json!(9_007_199_254_740_993_i64));
        assert_eq!(value["title"], "Pumps");
        assert_eq!(value["body"], "");
        assert_eq!(value["embedding"], serde_json::json!([0.5, -1.0]));
        assert_eq!(value["updated_at"], "2024-01-01T00:00:00.005Z");
        assert_eq!(value["status"], "LIVE");
        // Field order follows the .proto file.
        assert!(json.starts_with(r#"{"id":"#), "{json}");
        // The explicit index form [0] decodes the same.
        assert_eq!(schema.to_json(&encoded(&schema, &[2, 0])), Ok(json));
    }

    #[test]
    fn accepts_base64_descriptors() {
        let source = ProtoSchema::parse(ARTICLE, &[author()]).expect("compiles");
        let as_descriptor = |file: &FileDescriptor| BASE64.encode(file.encode_to_vec());
        let author_file = source
            .file
            .parent_pool()
            .get_file_by_name("author.proto")
            .expect("import");
        let mut main = source.file.file_descriptor_proto().clone();
        main.name = Some("article.proto".into());
        let schema = ProtoSchema::parse(
            &BASE64.encode(main.encode_to_vec()),
            &[SchemaText {
                name: "author.proto".into(),
                text: as_descriptor(&author_file),
            }],
        )
        .expect("descriptor form");
        let json = schema.to_json(&encoded(&source, &[0])).expect("decodes");
        assert!(json.contains(r#""title":"Pumps""#), "{json}");
    }

    #[test]
    fn bad_schemas_and_payloads_are_errors() {
        assert!(
            ProtoSchema::parse(ARTICLE, &[])
                .unwrap_err()
                .contains("author.proto")
        );
        assert!(ProtoSchema::parse("syntax = \"proto3\";", &[]).is_err());
        assert!(ProtoSchema::parse("message {", &[]).is_err());
        let schema = ProtoSchema::parse(ARTICLE, &[author()]).expect("compiles");
        // Message index 5 does not exist; nested [0, 0] is Article.Note.
        assert!(
            schema
                .to_json(&[2, 10])
                .unwrap_err()
                .contains("name no message")
        );
        assert!(schema.to_json(&[4, 0, 0, 0x0a, 1, b'x']).is_ok());
        // Field 1 (int64) with a truncated varint.
        assert!(schema.to_json(&[0, 0x08, 0xff]).is_err());
        assert!(schema.to_json(&[]).is_err());
    }
}
