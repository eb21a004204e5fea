//! OvenMediaEngine's WebRTC signalling messages, as OvenPlayer speaks them
//! (JSON text frames). Sans-IO: [`parse`] turns a client's text into a
//! [`ClientMessage`] or the OME error to answer with; the `*_json`
//! functions build the server's messages.
//!
//! Checks follow OME's order: JSON, `command`, then the session `id` on
//! everything but `request_offer` (400 "Invalid ID"), then the command.

use crate::auth::turn::{IceServer, IceServers};
use serde_json::{Value, json};

use super::Rendition;

/// A message from the player.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    RequestOffer,
    Answer {
        sdp: String,
    },
    /// Trickled client candidates: accepted and ignored (the server is
    /// ICE-lite and answers STUN from wherever it comes).
    Candidate,
    ChangeRendition {
        rendition: Option<String>,
        auto: Option<bool>,
    },
    Stop,
    /// A reply to a JSON ping (OvenPlayer sends it only if asked).
    Pong,
}

/// An error to send as `{"code","error"}` before closing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {message}")]
pub struct SignalError {
    pub code: u16,
    pub message: String,
}

impl SignalError {
    pub fn new(code: u16, message: impl Into<String>) -> SignalError {
        SignalError {
            code,
            message: message.into(),
        }
    }

    pub fn json(&self) -> String {
        json!({"code": self.code, "error": self.message}).to_string()
    }
}

fn bad(message: impl Into<String>) -> SignalError {
    SignalError::new(400, message)
}

/// Parses one text frame. `session` is the id given in the offer, if any.
pub fn parse(text: &str, session: Option<u32>) -> Result<ClientMessage, SignalError> {
    let v: Value = serde_json::from_str(text).map_err(|_| bad("Invalid JSON"))?;
    let obj = v.as_object().ok_or_else(|| bad("Invalid JSON"))?;
    let command = obj
        .get("command")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("There is no command"))?;
    match command {
        "request_offer" => return Ok(ClientMessage::RequestOffer),
        // OvenPlayer's answer to a JSON ping carries no id.
        "pong" => return Ok(ClientMessage::Pong),
        _ => {}
    }
    let id = obj.get("id").and_then(Value::as_i64);
    if session.is_none() || id != session.map(i64::from) {
        return Err(bad("Invalid ID"));
    }
    match command {
        "answer" => {
            let sdp = obj.get("sdp").ok_or_else(|| bad("There is no SDP"))?;
            if sdp.get("type").and_then(Value::as_str) != Some("answer") {
                return Err(bad("Invalid SDP type"));
            }
            let sdp = sdp
                .get("sdp")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("SDP must be a string"))?;
            Ok(ClientMessage::Answer {
                sdp: sdp.to_owned(),
            })
        }
        "candidate" => {
            let list = obj
                .get("candidates")
                .ok_or_else(|| bad("There is no candidate list"))?;
            let list = list
                .as_array()
                .ok_or_else(|| bad("Candidates must be array"))?;
            for c in list {
                let text = c.get("candidate").and_then(Value::as_str).unwrap_or("");
                if !text.is_empty() && str0m::Candidate::from_sdp_string(text).is_err() {
                    return Err(bad(format!("Invalid candidate: {text:.100}")));
                }
            }
            Ok(ClientMessage::Candidate)
        }
        "change_rendition" => Ok(ClientMessage::ChangeRendition {
            rendition: obj
                .get("rendition_name")
                .and_then(Value::as_str)
                .map(str::to_owned),
            auto: obj.get("auto").and_then(Value::as_bool),
        }),
        "stop" => Ok(ClientMessage::Stop),
        other => Err(bad(format!("Unknown command: {other:.40}"))),
    }
}

/// The offer: the SDP, and the server's candidates (also in the SDP; the
/// server never trickles).
pub fn offer_json(id: u32, sdp: &str, candidates: &[String], ice: &[IceServer]) -> String {
    let candidates: Vec<Value> = candidates
        .iter()
        .map(|c| json!({"candidate": c, "sdpMLineIndex": 0}))
        .collect();
    let mut offer = json!({
        "command": "offer",
        "id": id,
        "peer_id": 0,
        "code": 200,
        "sdp": {"type": "offer", "sdp": sdp},
        "candidates": candidates,
    });
    // TURN servers, in WebRTC's shape and OME's legacy one (OvenPlayer
    // reads either).
    if !ice.is_empty() {
        let (modern, legacy) = IceServers::ome_json(ice);
        offer["iceServers"] = modern;
        offer["ice_servers"] = legacy;
    }
    offer.to_string()
}

/// The `playlist` notification, in OME's shape (OvenPlayer builds its
/// quality menu from it). Renditions go largest first.
pub fn playlist_json(name: &str, auto: bool, renditions: &[Rendition], audio: bool) -> String {
    let renditions: Vec<Value> = renditions
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut rendition = json!({
                "name": r.name,
                "video_track": {
                    "id": i,
                    "name": r.name,
                    "type": "Video",
                    "video": {
                        "codec": "H264",
                        "bypass": false,
                        "hasBframes": false,
                        "width": r.width,
                        "height": r.height,
                        "bitrate": r.bitrate,
                        "timebase": {"num": 1, "den": 90000},
                    },
                },
            });
            if audio {
                rendition["audio_track"] = json!({
                    "id": 1000,
                    "name": "opus",
                    "type": "Audio",
                    "audio": {
                        "codec": "OPUS",
                        "bypass": false,
                        "samplerate": 48000,
                        "channel": 2,
                        "timebase": {"num": 1, "den": 48000},
                    },
                });
            }
            rendition
        })
        .collect();
    json!({
        "command": "notification",
        "type": "playlist",
        "message": {
            "name": name,
            "file_name": name,
            "auto": auto,
            "renditions": renditions,
        },
    })
    .to_string()
}

pub fn rendition_changed_json(name: &str, auto: bool) -> String {
    json!({
        "command": "notification",
        "type": "rendition_changed",
        "message": {"rendition_name": name, "auto": auto},
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_offer_needs_no_id() {
        assert_eq!(
            parse(r#"{"command":"request_offer"}"#, None),
            Ok(ClientMessage::RequestOffer)
        );
    }

    #[test]
    fn answer_is_checked_like_ome() {
        let ok = r#"{"command":"answer","id":7,"peer_id":0,"sdp":{"type":"answer","sdp":"v=0"}}"#;
        assert_eq!(
            parse(ok, Some(7)),
            Ok(ClientMessage::Answer { sdp: "v=0".into() })
        );
        assert_eq!(parse(ok, Some(8)).unwrap_err().message, "Invalid ID");
        assert_eq!(parse(ok, None).unwrap_err().message, "Invalid ID");
        let wrong_type = r#"{"command":"answer","id":7,"sdp":{"type":"offer","sdp":"v=0"}}"#;
        assert_eq!(
            parse(wrong_type, Some(7)).unwrap_err().message,
            "Invalid SDP type"
        );
        let no_sdp = r#"{"command":"answer","id":7}"#;
        assert_eq!(
            parse(no_sdp, Some(7)).unwrap_err().message,
            "There is no SDP"
        );
    }

    #[test]
    fn bad_frames_are_400() {
        for (text, message) in [
            ("not json", "Invalid JSON"),
            ("[1,2]", "Invalid JSON"),
            (r#"{"id":1}"#, "There is no command"),
            (r#"{"command":"dance","id":1}"#, "Unknown command: dance"),
            // A wrong id wins over an unknown command, as in OME.
            (r#"{"command":"dance","id":2}"#, "Invalid ID"),
            (
                r#"{"command":"candidate","id":1,"candidates":{}}"#,
                "Candidates must be array",
            ),
            (
                r#"{"command":"candidate","id":1}"#,
                "There is no candidate list",
            ),
        ] {
            let e = parse(text, Some(1)).unwrap_err();
            assert_eq!((e.code, e.message.as_str()), (400, message), "{text}");
        }
        let e = parse(
            r#"{"command":"candidate","id":1,"candidates":[{"candidate":"candidate:garbage"}]}"#,
            Some(1),
        )
        .unwrap_err();
        assert!(e.message.starts_with("Invalid candidate"), "{e}");
    }

    #[test]
    fn player_commands_parse() {
        let c = r#"{"command":"candidate","id":1,"peer_id":0,"candidates":[{"candidate":"candidate:1 1 udp 2122260223 192.168.1.2 54321 typ host","sdpMid":"0","sdpMLineIndex":0},{"candidate":""}]}"#;
        assert_eq!(parse(c, Some(1)), Ok(ClientMessage::Candidate));
        assert_eq!(
            parse(
                r#"{"command":"change_rendition","id":1,"rendition_name":"480p","auto":false}"#,
                Some(1)
            ),
            Ok(ClientMessage::ChangeRendition {
                rendition: Some("480p".into()),
                auto: Some(false)
            })
        );
        assert_eq!(
            parse(r#"{"command":"stop","id":1}"#, Some(1)),
            Ok(ClientMessage::Stop)
        );
        assert_eq!(
            parse(r#"{"command":"pong"}"#, Some(1)),
            Ok(ClientMessage::Pong)
        );
    }

    #[test]
    fn offer_and_notifications_have_omes_shape() {
        let o: Value = serde_json::from_str(&offer_json(
            5,
            "v=0\r\n",
            &["candidate:1 1 udp 1 127.0.0.1 9 typ host".into()],
            &[],
        ))
        .unwrap();
        assert!(o.get("iceServers").is_none(), "none configured: none sent");
        assert_eq!(o["command"], "offer");
        assert_eq!(o["id"], 5);
        assert_eq!(o["peer_id"], 0);
        assert_eq!(o["sdp"]["type"], "offer");
        assert_eq!(o["candidates"][0]["sdpMLineIndex"], 0);
        let r = Rendition {
            name: "720p".into(),
            track: "720p".into(),
            bitrate: 2_500_000,
            width: 1280,
            height: 720,
        };
        let p: Value = serde_json::from_str(&playlist_json("abr", true, &[r], true)).unwrap();
        assert_eq!(p["type"], "playlist");
        assert_eq!(p["message"]["renditions"][0]["name"], "720p");
        assert_eq!(
            p["message"]["renditions"][0]["video_track"]["video"]["bitrate"],
            2_500_000
        );
        assert_eq!(
            p["message"]["renditions"][0]["audio_track"]["audio"]["codec"],
            "OPUS"
        );
        let c: Value = serde_json::from_str(&rendition_changed_json("720p", true)).unwrap();
        assert_eq!(c["message"]["rendition_name"], "720p");
        assert_eq!(c["message"]["auto"], true);
    }
}
