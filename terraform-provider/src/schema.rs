//! The provider's schemas, described once in Rust and turned into the
//! protocol's messages by `server`: attributes, their types and modes, and
//! single nested objects (`limits`).

use serde_json::json;

/// A value's type as Terraform writes it in JSON (`"string"`,
/// `["list","string"]`, `["object",{…}]`).
#[derive(Debug, Clone)]
pub enum Type {
    String,
    Number,
    Bool,
    List(Box<Type>),
    Object(Vec<(&'static str, Type)>),
}

impl Type {
    pub fn list(of: Type) -> Self {
        Type::List(Box::new(of))
    }

    pub fn json(&self) -> serde_json::Value {
        match self {
            Type::String => json!("string"),
            Type::Number => json!("number"),
            Type::Bool => json!("bool"),
            Type::List(of) => json!(["list", of.json()]),
            Type::Object(attrs) => {
                let attrs: serde_json::Map<String, serde_json::Value> = attrs
                    .iter()
                    .map(|(k, t)| ((*k).to_owned(), t.json()))
                    .collect();
                json!(["object", attrs])
            }
        }
    }
}

/// Who sets an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Required,
    Optional,
    /// Set by the provider only.
    Computed,
    /// Set in configuration, or by the provider when left out.
    OptionalComputed,
}

#[derive(Debug, Clone)]
pub enum Shape {
    Primitive(Type),
    /// A single nested object with attributes of its own.
    Nested(Vec<Attribute>),
}

#[derive(Debug, Clone)]
pub struct Attribute {
    pub name: &'static str,
    pub shape: Shape,
    pub mode: Mode,
    pub sensitive: bool,
    pub description: &'static str,
}

impl Attribute {
    pub fn new(name: &'static str, ty: Type, mode: Mode, description: &'static str) -> Self {
        Self {
            name,
            shape: Shape::Primitive(ty),
            mode,
            sensitive: false,
            description,
        }
    }

    pub fn nested(
        name: &'static str,
        attributes: Vec<Attribute>,
        mode: Mode,
        description: &'static str,
    ) -> Self {
        Self {
            name,
            shape: Shape::Nested(attributes),
            mode,
            sensitive: false,
            description,
        }
    }

    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }
}

#[derive(Debug, Clone)]
pub struct Schema {
    pub version: i64,
    pub description: &'static str,
    pub attributes: Vec<Attribute>,
}
