//! Compiled JSON Schemas, cached by checksum so a write does not recompile its config's schema.
//! The cache is bounded: when full it starts over (schemas change rarely, compiles are cheap
//! compared with a write's round trip).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Error;
use crate::model::schema::Schema;
use crate::model::{ConfigKey, ConfigRecord};
use crate::store::Store;

const MAX_CACHED: usize = 256;

#[derive(Default)]
pub struct SchemaCache {
    compiled: Mutex<HashMap<String, Arc<Schema>>>,
}

impl SchemaCache {
    /// The schema `record` names (its checksum and compiled form), read from `store` on a miss.
    pub fn for_config(
        &self,
        store: &Store,
        key: &ConfigKey,
        record: Option<&ConfigRecord>,
    ) -> Result<Option<(String, Arc<Schema>)>, Error> {
        let Some(checksum) = record.and_then(|r| r.schema_checksum.clone()) else { return Ok(None) };
        if let Some(schema) = self.lock().get(&checksum) {
            return Ok(Some((checksum, schema.clone())));
        }
        let bytes = store.schema(key)?.ok_or_else(|| Error::Storage(format!("schema of {key} is missing")))?;
        let schema =
            Arc::new(Schema::compile(&bytes).map_err(|e| Error::Storage(format!("stored schema of {key}: {e}")))?);
        let mut compiled = self.lock();
        if compiled.len() >= MAX_CACHED {
            compiled.clear();
        }
        compiled.insert(checksum.clone(), schema.clone());
        Ok(Some((checksum, schema)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Schema>>> {
        self.compiled.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
