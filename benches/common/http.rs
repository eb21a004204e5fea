//! A plain HTTP/1.1 client for the load benches: GET, status and body.
#![allow(dead_code)] // each bench uses a subset

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

pub type Http = Client<HttpConnector, Empty<Bytes>>;

/// GET `url`: its status and whole body, or what failed.
pub async fn get(http: &Http, url: &str) -> Result<(u16, Bytes), String> {
    let req = hyper::Request::get(url)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = http.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}
