//! openraft's own storage conformance suite, run on the production store constructor.

use conflux::store::{LogStore, StateMachineStore, Store};
use conflux::types::TypeConfig;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};
use tempfile::TempDir;

struct RocksBuilder;

fn opening_failed(e: impl std::error::Error + Send + Sync + 'static) -> StorageError<TypeConfig> {
    StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, std::io::Error::other(e))
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = TempDir::new().map_err(opening_failed)?;
        let store = Store::open(dir.path()).map_err(opening_failed)?;
        let storage = store.raft_storage();
        Ok((dir, storage.log_store, storage.state_machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocksdb_store_passes_the_openraft_storage_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(RocksBuilder).await
}
