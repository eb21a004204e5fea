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

/// The preload hint of an LL-HLS media playlist: the blocking-reload query
/// for the part it names (`_HLS_msn=M&_HLS_part=P`) and the part's URI.
/// streamd names parts `{rendition}_{version}_{msn}_{part}.m4s`.
pub fn preload_hint(playlist: &str) -> Option<(String, String)> {
    let line = playlist
        .lines()
        .find(|l| l.starts_with("#EXT-X-PRELOAD-HINT"))?;
    let uri = line.split("URI=\"").nth(1)?.split('"').next()?;
    // A private stream's part carries its token: `…_7_3.m4s?token=…`.
    let name = uri.split('?').next()?;
    let mut fields = name.strip_suffix(".m4s")?.rsplitn(3, '_');
    let part: u64 = fields.next()?.parse().ok()?;
    let msn: u64 = fields.next()?.parse().ok()?;
    Some((format!("_HLS_msn={msn}&_HLS_part={part}"), uri.to_owned()))
}
