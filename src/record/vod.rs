//! VOD playlists of a recording, rendered from its journal (sans-IO).
//!
//! `master.m3u8` lists each recorded video rendition as a variant (an ABR
//! master when the ladder was recorded) and audio as an `EXT-X-MEDIA`
//! group; `{rendition}.m3u8` lists its closed segments in order, with
//! `EXT-X-MAP` wherever the init segment changes and
//! `EXT-X-DISCONTINUITY` where the recording has one (a publisher that
//! came back, a segment that could not be recorded). While the stream is
//! live the playlist is an `EVENT` one; after, `VOD` with `EXT-X-ENDLIST`.

use std::fmt::Write;

use crate::llhls::playlist::UriQuery;
use crate::store::recordings::{
    Recording, RecordingStatus, RenditionInfo, SegmentKind, SegmentRow, SegmentStatus,
};

fn playable(s: &SegmentRow) -> bool {
    s.kind == SegmentKind::Media && s.status != SegmentStatus::Open && s.duration_us > 0
}

/// (peak, average) bits per second of a rendition's segments.
fn bitrates(segments: &[SegmentRow], rendition: &str) -> (f64, f64) {
    let mut peak = 0f64;
    let (mut bytes, mut us) = (0i64, 0i64);
    for s in segments
        .iter()
        .filter(|s| s.rendition == rendition && playable(s))
    {
        peak = peak.max(s.bytes as f64 * 8e6 / s.duration_us as f64);
        bytes += s.bytes;
        us += s.duration_us;
    }
    let avg = if us > 0 {
        bytes as f64 * 8e6 / us as f64
    } else {
        0.0
    };
    (peak, avg)
}

fn has_media(segments: &[SegmentRow], rendition: &str) -> bool {
    segments
        .iter()
        .any(|s| s.rendition == rendition && playable(s))
}

pub fn master(r: &Recording, segments: &[SegmentRow], query: UriQuery<'_>) -> String {
    let mut o = String::with_capacity(1024);
    o.push_str("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let with_media = |kind: &str| -> Vec<&RenditionInfo> {
        r.renditions
            .iter()
            .filter(|x| x.kind == kind && has_media(segments, &x.name))
            .collect()
    };
    let audio = with_media("audio");
    let video = with_media("video");
    for (i, a) in audio.iter().enumerate() {
        let _ = writeln!(
            o,
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"{}\",LANGUAGE=\"und\",DEFAULT={},AUTOSELECT=YES,CHANNELS=\"{}\",URI=\"{}.m3u8{query}\"",
            a.name,
            if i == 0 { "YES" } else { "NO" },
            a.channels.max(1),
            a.name
        );
    }
    let (audio_peak, audio_avg) = audio
        .first()
        .map_or((0.0, 0.0), |a| bitrates(segments, &a.name));
    let audio_codec = audio.first().map(|a| a.codecs.as_str());
    for v in &video {
        let (peak, avg) = bitrates(segments, &v.name);
        let codecs = match audio_codec {
            Some(a) => format!("{},{a}", v.codecs),
            None => v.codecs.clone(),
        };
        let _ = write!(
            o,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{codecs}\"",
            (peak + audio_peak).ceil() as u64,
            (avg + audio_avg).ceil() as u64,
        );
        if v.width > 0 && v.height > 0 {
            let _ = write!(o, ",RESOLUTION={}x{}", v.width, v.height);
        }
        if !audio.is_empty() {
            o.push_str(",AUDIO=\"audio\"");
        }
        let _ = writeln!(o, "\n{}.m3u8{query}", v.name);
    }
    if video.is_empty()
        && let Some(a) = audio.first()
    {
        let _ = writeln!(
            o,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{}\"\n{}.m3u8{query}",
            audio_peak.ceil() as u64,
            audio_avg.ceil() as u64,
            a.codecs,
            a.name
        );
    }
    o
}

/// A rendition's media playlist; None if the recording has no such
/// rendition.
pub fn media(
    r: &Recording,
    rendition: &str,
    segments: &[SegmentRow],
    query: UriQuery<'_>,
) -> Option<String> {
    r.renditions.iter().find(|x| x.name == rendition)?;
    let mut list: Vec<&SegmentRow> = segments
        .iter()
        .filter(|s| s.rendition == rendition && playable(s))
        .collect();
    list.sort_by_key(|s| s.seq);
    let target = list
        .iter()
        .map(|s| (s.duration_us as u64).div_ceil(1_000_000))
        .max()
        .unwrap_or(1)
        .max(1);
    let live = r.status == RecordingStatus::Recording;
    let mut o = String::with_capacity(128 + list.len() * 48);
    let _ = write!(
        o,
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:{}\n#EXT-X-INDEPENDENT-SEGMENTS\n",
        if live { "EVENT" } else { "VOD" }
    );
    let mut init = None;
    let mut previous: Option<i64> = None;
    for s in list {
        // A segment missing from the run (not recorded) is a gap too.
        if s.discontinuity || previous.is_some_and(|p| s.seq != p + 1) {
            o.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if init != Some(s.init_seq) {
            let _ = writeln!(
                o,
                "#EXT-X-MAP:URI=\"{rendition}/init_{}.mp4{query}\"",
                s.init_seq
            );
            init = Some(s.init_seq);
        }
        let _ = writeln!(
            o,
            "#EXTINF:{:.6},\n{rendition}/{}.m4s{query}",
            s.duration_us as f64 / 1e6,
            s.seq
        );
        previous = Some(s.seq);
    }
    if !live {
        o.push_str("#EXT-X-ENDLIST\n");
    }
    Some(o)
}

/// A segment file name a request may ask for: `init_N.mp4` or `N.m4s`.
pub fn parse_segment_file(file: &str) -> Option<(SegmentKind, i64)> {
    let number = |n: &str| -> Option<i64> {
        (!n.is_empty() && n.len() <= 12 && n.bytes().all(|b| b.is_ascii_digit()))
            .then(|| n.parse().ok())
            .flatten()
    };
    if let Some(n) = file
        .strip_prefix("init_")
        .and_then(|f| f.strip_suffix(".mp4"))
    {
        return Some((SegmentKind::Init, number(n)?));
    }
    Some((SegmentKind::Media, number(file.strip_suffix(".m4s")?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(status: RecordingStatus) -> Recording {
        let info = |name: &str, kind: &str, codecs: &str| RenditionInfo {
            name: name.into(),
            kind: kind.into(),
            codecs: codecs.into(),
            width: if kind == "video" { 1280 } else { 0 },
            height: if kind == "video" { 720 } else { 0 },
            channels: if kind == "audio" { 2 } else { 0 },
            timescale: 90_000,
        };
        Recording {
            id: "rec_0123456789abcdef".into(),
            app: "live".into(),
            stream: "cam".into(),
            status,
            node: "n".into(),
            location: "file:///r".into(),
            renditions: vec![
                info("720p", "video", "avc1.64001f"),
                info("audio", "audio", "mp4a.40.2"),
                info("360p", "video", "avc1.64001e"),
            ],
            started_at: 0,
            ended_at: None,
            duration_ms: 0,
            bytes: 0,
        }
    }

    fn seg(rendition: &str, seq: i64, init_seq: i64, us: i64, disc: bool) -> SegmentRow {
        SegmentRow {
            recording_id: "rec_0123456789abcdef".into(),
            rendition: rendition.into(),
            kind: SegmentKind::Media,
            seq,
            init_seq,
            duration_us: us,
            bytes: 750_000,
            discontinuity: disc,
            status: SegmentStatus::Uploaded,
        }
    }

    #[test]
    fn a_finished_recording_is_a_vod_playlist() {
        let segments = vec![
            seg("720p", 0, 0, 6_000_000, false),
            seg("720p", 1, 0, 6_000_000, false),
            // Seq 2 was not recorded; 3 follows a reconnect with a new init.
            seg("720p", 3, 1, 5_500_000, true),
            seg("720p", 4, 1, 6_500_000, false),
            SegmentRow {
                status: SegmentStatus::Open,
                ..seg("720p", 5, 1, 0, false)
            },
            seg("audio", 0, 0, 6_000_000, false),
        ];
        let r = rec(RecordingStatus::Ready);
        let m = media(&r, "720p", &segments, UriQuery::NONE).unwrap();
        assert_eq!(
            m,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:7\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-MAP:URI=\"720p/init_0.mp4\"\n#EXTINF:6.000000,\n720p/0.m4s\n\
             #EXTINF:6.000000,\n720p/1.m4s\n#EXT-X-DISCONTINUITY\n\
             #EXT-X-MAP:URI=\"720p/init_1.mp4\"\n#EXTINF:5.500000,\n720p/3.m4s\n\
             #EXTINF:6.500000,\n720p/4.m4s\n#EXT-X-ENDLIST\n"
        );
        let live = media(
            &rec(RecordingStatus::Recording),
            "720p",
            &segments,
            UriQuery::NONE,
        )
        .unwrap();
        assert!(live.contains("PLAYLIST-TYPE:EVENT") && !live.contains("ENDLIST"));
        assert_eq!(media(&r, "nope", &segments, UriQuery::NONE), None);

        let token = UriQuery::token("a\"b");
        let master = master(&r, &segments, UriQuery::new(Some(&token)));
        // 360p recorded nothing: not offered.
        assert!(!master.contains("360p"), "{master}");
        assert!(
            master.contains("URI=\"audio.m3u8?token=a%22b\""),
            "{master}"
        );
        assert!(
            master.contains("CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,AUDIO=\"audio\"\n720p.m3u8?token=a%22b\n"),
            "{master}"
        );
        // 750 kB in 5.5 s at the peak, twice over (video and audio).
        assert!(master.contains("BANDWIDTH=2090910,"), "{master}");
    }

    #[test]
    fn segment_names_are_parsed_strictly() {
        assert_eq!(parse_segment_file("12.m4s"), Some((SegmentKind::Media, 12)));
        assert_eq!(
            parse_segment_file("init_0.mp4"),
            Some((SegmentKind::Init, 0))
        );
        for bad in [
            "",
            ".m4s",
            "-1.m4s",
            "1.mp4",
            "init_.mp4",
            "../1.m4s",
            "1.m4s/..",
            "9999999999999.m4s",
            "+1.m4s",
        ] {
            assert_eq!(parse_segment_file(bad), None, "{bad}");
        }
    }
}
