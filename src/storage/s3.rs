//! A region in an S3-compatible object store (aws-sdk-s3). Large objects go up as multipart
//! uploads with a bounded number of parts in flight, so memory is part size × (concurrency + 1).

use super::{ObjectInfo, ObjectReader, ObjectStore, PendingUpload, StorageError, Upload};
use crate::config::{RegionBackend, RegionConfig};
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region as AwsRegion, RequestChecksumCalculation,
    ResponseChecksumValidation,
};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use std::time::Duration;
use tokio::task::JoinSet;

pub struct S3Store {
    region: String,
    bucket: String,
    client: Client,
    part_size: usize,
    concurrency: usize,
}

fn detail<E: std::error::Error>(e: &E) -> String {
    // The SDK's Display says only "service error"; the context has the code and message.
    format!("{}", DisplayErrorContext(e))
}

impl S3Store {
    pub fn new(
        cfg: &RegionConfig,
        part_size: usize,
        concurrency: usize,
    ) -> Result<Self, StorageError> {
        let RegionBackend::S3 {
            endpoint,
            region,
            bucket,
            path_style,
            access_key_id,
            secret_access_key,
        } = &cfg.backend
        else {
            unreachable!("S3Store::new is called for S3 regions only")
        };
        let err = |field: &str, e: crate::secret::SecretError| StorageError::Backend {
            region: cfg.name.clone(),
            op: "credentials",
            key: field.to_string(),
            detail: e.to_string(),
        };
        let akid = access_key_id
            .resolve(&format!("regions.{}.access-key-id", cfg.name))
            .map_err(|e| err("access-key-id", e))?;
        let secret = secret_access_key
            .resolve(&format!("regions.{}.secret-access-key", cfg.name))
            .map_err(|e| err("secret-access-key", e))?;
        let creds = Credentials::new(
            akid.expose(),
            secret.expose(),
            None,
            None,
            "lifeboat-config",
        );
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(300))
            .build();
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(AwsRegion::new(region.clone()))
            .endpoint_url(endpoint)
            .credentials_provider(creds)
            .force_path_style(*path_style)
            .timeout_config(timeouts)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(3))
            // We hash every artifact ourselves (SHA-256) and verify it on read; the SDK's extra
            // CRC trailers are not understood by every S3-compatible store.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Ok(S3Store {
            region: cfg.name.clone(),
            bucket: bucket.clone(),
            client: Client::from_conf(conf),
            part_size,
            concurrency,
        })
    }

    fn err(&self, op: &'static str, key: &str, detail: String) -> StorageError {
        StorageError::Backend {
            region: self.region.clone(),
            op,
            key: key.to_string(),
            detail,
        }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StorageError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("put", key, detail(&e)))
    }

    async fn begin(&self, key: &str) -> Result<Box<dyn Upload>, StorageError> {
        Ok(Box::new(S3Upload {
            region: self.region.clone(),
            bucket: self.bucket.clone(),
            key: key.to_string(),
            client: self.client.clone(),
            part_size: self.part_size,
            concurrency: self.concurrency,
            buf: BytesMut::new(),
            upload_id: None,
            next_part: 1,
            inflight: JoinSet::new(),
            done: Vec::new(),
        }))
    }

    async fn get(&self, key: &str) -> Result<ObjectReader, StorageError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Box::new(out.body.into_async_read())),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                Err(StorageError::NotFound {
                    region: self.region.clone(),
                    key: key.to_string(),
                })
            }
            Err(e) => Err(self.err("get", key, detail(&e))),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<u64>, StorageError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(self.err("head", key, detail(&e))),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        // Bounded: a listing of more than 10 million objects is refused rather than looped on.
        for _ in 0..10_000 {
            let resp = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.err("list", prefix, detail(&e)))?;
            for o in resp.contents() {
                if let Some(key) = o.key() {
                    out.push(ObjectInfo {
                        key: key.to_string(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                    });
                }
            }
            match resp.next_continuation_token() {
                Some(t) if resp.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => {
                    out.sort_by(|a, b| a.key.cmp(&b.key));
                    return Ok(out);
                }
            }
        }
        Err(self.err("list", prefix, "more than 10,000 pages of results".into()))
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("delete", key, detail(&e)))
    }

    async fn probe(&self, prefix: &str) -> Result<(), StorageError> {
        self.client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(1)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("probe", &format!("bucket {}", self.bucket), detail(&e)))
    }

    async fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>, StorageError> {
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        // Bounded like `list`.
        for _ in 0..10_000 {
            let resp = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| self.err("list multipart uploads", prefix, detail(&e)))?;
            for u in resp.uploads() {
                if let (Some(key), Some(id)) = (u.key(), u.upload_id()) {
                    out.push(PendingUpload {
                        key: key.to_string(),
                        id: id.to_string(),
                        started: u.initiated().and_then(|t| {
                            chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
                        }),
                    });
                }
            }
            if resp.is_truncated() != Some(true) {
                return Ok(out);
            }
            key_marker = resp.next_key_marker().map(str::to_string);
            id_marker = resp.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() {
                return Ok(out);
            }
        }
        Err(self.err(
            "list multipart uploads",
            prefix,
            "more than 10,000 pages of results".into(),
        ))
    }

    async fn abort_pending(&self, upload: &PendingUpload) -> Result<(), StorageError> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&upload.key)
            .upload_id(&upload.id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("abort multipart upload", &upload.key, detail(&e)))
    }
}

struct S3Upload {
    region: String,
    bucket: String,
    key: String,
    client: Client,
    part_size: usize,
    concurrency: usize,
    buf: BytesMut,
    upload_id: Option<String>,
    next_part: i32,
    inflight: JoinSet<Result<CompletedPart, String>>,
    done: Vec<CompletedPart>,
}

impl S3Upload {
    fn err(&self, op: &'static str, detail: String) -> StorageError {
        StorageError::Backend {
            region: self.region.clone(),
            op,
            key: self.key.clone(),
            detail,
        }
    }

    async fn join_one(&mut self) -> Result<(), StorageError> {
        match self.inflight.join_next().await {
            Some(Ok(Ok(part))) => {
                self.done.push(part);
                Ok(())
            }
            Some(Ok(Err(e))) => Err(self.err("upload part", e)),
            Some(Err(e)) => Err(self.err("upload part", e.to_string())),
            None => Ok(()),
        }
    }

    async fn send_part(&mut self, body: Bytes) -> Result<(), StorageError> {
        if self.upload_id.is_none() {
            let out = self
                .client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .send()
                .await
                .map_err(|e| self.err("create multipart upload", detail(&e)))?;
            self.upload_id = out.upload_id().map(str::to_string);
            if self.upload_id.is_none() {
                return Err(self.err(
                    "create multipart upload",
                    "no upload id in the answer".into(),
                ));
            }
        }
        while self.inflight.len() >= self.concurrency {
            self.join_one().await?;
        }
        let number = self.next_part;
        self.next_part += 1;
        let req = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(self.upload_id.clone().unwrap_or_default())
            .part_number(number)
            .body(ByteStream::from(body));
        self.inflight.spawn(async move {
            let out = req.send().await.map_err(|e| detail(&e))?;
            Ok(CompletedPart::builder()
                .set_e_tag(out.e_tag().map(str::to_string))
                .part_number(number)
                .build())
        });
        Ok(())
    }
}

#[async_trait]
impl Upload for S3Upload {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        self.buf.extend_from_slice(&chunk);
        while self.buf.len() >= self.part_size {
            let part = self.buf.split_to(self.part_size).freeze();
            self.send_part(part).await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<(), StorageError> {
        let rest = std::mem::take(&mut self.buf).freeze();
        if self.upload_id.is_none() {
            // Small object: one PUT, atomic by nature.
            return self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .body(ByteStream::from(rest))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.err("put", detail(&e)));
        }
        let result = async {
            if !rest.is_empty() {
                self.send_part(rest).await?;
            }
            while !self.inflight.is_empty() {
                self.join_one().await?;
            }
            let mut parts = std::mem::take(&mut self.done);
            parts.sort_by_key(|p| p.part_number());
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(self.upload_id.clone().unwrap_or_default())
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.err("complete multipart upload", detail(&e)))
        }
        .await;
        if result.is_err() {
            self.abort().await;
        }
        result
    }

    async fn abort(mut self: Box<Self>) {
        self.inflight.abort_all();
        while self.inflight.join_next().await.is_some() {}
        if let Some(id) = self.upload_id.take()
            && let Err(e) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(id)
                .send()
                .await
        {
            tracing::warn!(region = %self.region, key = %self.key, error = %detail(&e), "could not abort multipart upload");
        }
    }
}
