//! openraft's own storage conformance suite, run on the production store constructor.

use conflux::store::{LogStore, StateMachineStore, Store};
use conflux::types::TypeConfig;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{StorageError, StorageIOError};
use tempfile::TempDir;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = TempDir::new().map_err(|e| StorageIOError::write(&e))?;
        let store = Store::open(dir.path()).map_err(|e| StorageIOError::write(&e))?;
        let storage = store.raft_storage();
        Ok((dir, storage.log_store, storage.state_machine))
    }
}

#[test]
fn rocksdb_store_passes_the_openraft_storage_suite() -> Result<(), StorageError<u64>> {
    Suite::test_all(RocksBuilder)
}
