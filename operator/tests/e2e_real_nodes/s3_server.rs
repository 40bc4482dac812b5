//! A real S3 API on loopback for the backup tests: moto's server (`moto_server`, from PyPI's
//! `moto[server]`; `scripts/test.sh` installs it in the test virtualenv and names it in
//! `CONFLUX_MOTO_SERVER`), started on a free port with one empty bucket, killed on drop.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::Duration,
};

use object_store::{aws::AmazonS3Builder, ObjectStore};

pub struct S3Server {
    /// `http://127.0.0.1:<port>`: the destination's `endpoint`.
    pub endpoint: String,
    process: Child,
    http: reqwest::Client,
}

impl S3Server {
    /// The bucket every server starts with.
    pub const BUCKET: &'static str = "conflux-backups";
    /// Credentials for it (moto accepts any, but checks that requests are signed).
    pub const ACCESS_KEY_ID: &'static str = "e2e-access-key";
    pub const SECRET_ACCESS_KEY: &'static str = "e2e-secret-key";

    pub async fn start() -> S3Server {
        let program = std::env::var("CONFLUX_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let process = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {program} ({e}): scripts/test.sh installs it; else `pip install 'moto[server]'`")
            });
        let server = S3Server { endpoint: format!("http://127.0.0.1:{port}"), process, http: reqwest::Client::new() };
        for _ in 0..200 {
            if server.http.get(&server.endpoint).send().await.is_ok_and(|r| r.status().is_success()) {
                let bucket = server.http.put(format!("{}/{}", server.endpoint, Self::BUCKET)).send().await;
                assert!(bucket.is_ok_and(|r| r.status().is_success()), "creating the bucket");
                return server;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{program} did not answer on {} within 20 s", server.endpoint);
    }

    /// The size of the object at `key` in [`Self::BUCKET`], as the S3 API reports it to a
    /// client signing with [`Self::ACCESS_KEY_ID`] (anonymous reads are refused).
    pub async fn object_size(&self, key: String) -> u64 {
        let bucket = AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(Self::BUCKET)
            .with_region("eu-west-1")
            .with_access_key_id(Self::ACCESS_KEY_ID)
            .with_secret_access_key(Self::SECRET_ACCESS_KEY)
            .build()
            .expect("S3 client");
        let meta = bucket.head(&key.as_str().into()).await.unwrap_or_else(|e| panic!("no object {key}: {e}"));
        meta.size
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
