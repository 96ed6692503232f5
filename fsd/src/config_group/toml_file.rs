//! `ClusterFile` inside the group's binary (postcard) records, as its TOML text: the file
//! skips absent optional fields when serialized, which only self-describing formats read
//! back, and TOML is the form the file has anyway.

use proto::config::ClusterFile;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

fn to_text<E: serde::ser::Error>(f: &ClusterFile) -> Result<String, E> {
    toml::to_string(f).map_err(E::custom)
}

fn from_text<E: serde::de::Error>(t: &str) -> Result<ClusterFile, E> {
    toml::from_str(t).map_err(E::custom)
}

pub mod one {
    use super::*;

    pub fn serialize<S: Serializer>(f: &ClusterFile, s: S) -> Result<S::Ok, S::Error> {
        to_text(f)?.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ClusterFile, D::Error> {
        from_text(&String::deserialize(d)?)
    }
}

pub mod opt {
    use super::*;

    pub fn serialize<S: Serializer>(f: &Option<ClusterFile>, s: S) -> Result<S::Ok, S::Error> {
        f.as_ref().map(to_text).transpose()?.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ClusterFile>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| from_text(&t))
            .transpose()
    }
}
