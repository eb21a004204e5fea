//! Reading LL-HLS media playlists back, and the rules of the spec (RFC 8216bis)
//! every playlist streamd serves must keep, live or under overload.

use m3u8_parser::m3u8::playlist::Playlist;

use super::{attr, number_attr};

/// One media playlist, as read back.
#[derive(Debug)]
pub struct Media {
    pub text: String,
    pub part_target: f64,
    pub media_sequence: u64,
    pub segments: Vec<(u64, f64)>,
    /// (msn, index, duration, independent, uri)
    pub parts: Vec<(u64, u32, f64, bool, String)>,
    pub hint: Option<String>,
    pub reports: Vec<(String, u64, u32)>,
}

/// `{track}_{instance}_{msn}_{index}.m4s[?query]` -> (msn, index)
pub fn part_numbers(uri: &str) -> (u64, u32) {
    let path = uri.split('?').next().unwrap_or(uri);
    let stem = path.trim_end_matches(".m4s");
    let f: Vec<&str> = stem.split('_').collect();
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

pub fn parse_media(text: &str) -> Media {
    let pl = Playlist::from_reader(text.as_bytes()).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    if let Err(errors) = pl.validate() {
        panic!("invalid playlist: {errors:?}\n{text}");
    }
    let mut m = Media {
        text: text.to_owned(),
        part_target: 0.0,
        media_sequence: 0,
        segments: pl
            .media_segments()
            .into_iter()
            .map(|s| (s.sequence, s.duration))
            .collect(),
        parts: vec![],
        hint: None,
        reports: vec![],
    };
    for l in text.lines() {
        if let Some(v) = l.strip_prefix("#EXT-X-PART-INF:PART-TARGET=") {
            m.part_target = v.parse().unwrap();
        } else if let Some(v) = l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            m.media_sequence = v.parse().unwrap();
        } else if l.starts_with("#EXT-X-PART:") {
            let uri = attr(l, "URI").unwrap().to_owned();
            let (msn, index) = part_numbers(&uri);
            let d = attr(l, "DURATION").unwrap().parse().unwrap();
            m.parts
                .push((msn, index, d, l.contains("INDEPENDENT=YES"), uri));
        } else if l.starts_with("#EXT-X-PRELOAD-HINT:") {
            assert_eq!(attr(l, "TYPE"), Some("PART"));
            m.hint = attr(l, "URI").map(str::to_owned);
        } else if l.starts_with("#EXT-X-RENDITION-REPORT:") {
            m.reports.push((
                attr(l, "URI").unwrap().to_owned(),
                attr(l, "LAST-MSN").unwrap().parse().unwrap(),
                attr(l, "LAST-PART").unwrap().parse().unwrap(),
            ));
        }
    }
    m
}

/// Checks the LL-HLS rules one playlist must keep by itself.
pub fn check_rules(m: &Media) {
    let text = &m.text;
    assert!(
        text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL="),
        "{text}"
    );
    // PART-HOLD-BACK MUST be at least twice PART-TARGET and SHOULD be at
    // least three times.
    let phb = number_attr(text, "PART-HOLD-BACK");
    assert!(
        phb >= 3.0 * m.part_target - 1e-9,
        "PART-HOLD-BACK {phb} < 3 x {}",
        m.part_target
    );
    assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:"));
    // Segment numbering is contiguous from EXT-X-MEDIA-SEQUENCE.
    for (i, (msn, _)) in m.segments.iter().enumerate() {
        assert_eq!(*msn, m.media_sequence + i as u64);
    }
    // Parts: numbered 0.. within each segment, no longer than PART-TARGET,
    // and at least 85% of it unless independent or last in their segment.
    for (i, (msn, index, d, independent, _)) in m.parts.iter().enumerate() {
        assert!(
            *d <= m.part_target + 1e-9,
            "part {msn}.{index} {d} > {}",
            m.part_target
        );
        if i > 0 && m.parts[i - 1].0 == *msn {
            assert_eq!(*index, m.parts[i - 1].1 + 1);
        }
        let last_of_segment = m.parts.get(i + 1).is_none_or(|n| n.0 != *msn);
        if !independent && !last_of_segment {
            assert!(
                *d >= 0.85 * m.part_target,
                "part {msn}.{index} {d} < 85% of {}",
                m.part_target
            );
        }
    }
    // A segment whose parts are all listed lasts as long as they do
    // (EXTINF has five decimals, so does each part).
    for (msn, extinf) in &m.segments {
        let of: Vec<_> = m.parts.iter().filter(|p| p.0 == *msn).collect();
        if of.first().is_none_or(|p| p.1 != 0) {
            continue;
        }
        let sum: f64 = of.iter().map(|p| p.2).sum();
        let slack = 1e-5 * (of.len() + 1) as f64;
        assert!(
            (sum - extinf).abs() <= slack,
            "segment {msn}: EXTINF {extinf} but its parts add up to {sum}\n{text}"
        );
    }
    // The preload hint names the part after the last one listed.
    let (lm, li, ..) = m.parts.last().unwrap();
    let hint = part_numbers(m.hint.as_deref().unwrap());
    let last_complete = m.segments.last().map(|s| s.0);
    let expected = if last_complete == Some(*lm) {
        (lm + 1, 0)
    } else {
        (*lm, li + 1)
    };
    assert_eq!(hint, expected, "{text}");
}
