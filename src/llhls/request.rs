//! What an LL-HLS request asks for, sans-IO: the file a name denotes and
//! the playlist directives in its query. Parsed strictly (digits only,
//! within range; the names the playlists use and nothing else), so
//! hostile names are just names that do not match.

/// The file a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum File {
    Master,
    Media { track: String },
    Init { track: String, id: u32 },
    Segment { track: String, msn: u64 },
    Part { track: String, msn: u64, index: u32 },
}

/// The file `file` names for a stream whose output instance is `instance`;
/// None for anything not exactly one of the names the playlists use.
pub fn parse_file(file: &str, instance: &str) -> Option<File> {
    if file == "llhls.m3u8" {
        return Some(File::Master);
    }
    let (stem, ext) = file.rsplit_once('.')?;
    let mut fields = stem.split('_');
    let track = fields.next().filter(|t| is_track_name(t))?.to_owned();
    if fields.next()? != instance {
        return None;
    }
    let rest: Vec<&str> = fields.collect();
    match (ext, rest.as_slice()) {
        ("m3u8", []) => Some(File::Media { track }),
        ("mp4", [init]) => Some(File::Init {
            track,
            id: number(init.strip_prefix("init")?)?,
        }),
        ("m4s", [msn]) => Some(File::Segment {
            track,
            msn: number(msn)?,
        }),
        ("m4s", [msn, index]) => Some(File::Part {
            track,
            msn: number(msn)?,
            index: number(index)?,
        }),
        _ => None,
    }
}

fn is_track_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Digits only (no sign, no spaces), within the type's range.
fn number<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A playlist request's LL-HLS directives.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Directives {
    pub msn: Option<u64>,
    pub part: Option<u32>,
    pub skip: bool,
}

/// `_HLS_msn`, `_HLS_part` and `_HLS_skip` from a query; other keys
/// (tokens, cache busters) are ignored.
pub fn parse_directives(query: Option<&str>) -> Result<Directives, String> {
    let mut d = Directives::default();
    let Some(query) = query else { return Ok(d) };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "_HLS_msn" => {
                d.msn = Some(number(value).ok_or_else(|| format!("invalid _HLS_msn {value:.32?}"))?)
            }
            "_HLS_part" => {
                d.part =
                    Some(number(value).ok_or_else(|| format!("invalid _HLS_part {value:.32?}"))?)
            }
            "_HLS_skip" => match value {
                "YES" | "v2" => d.skip = true,
                _ => return Err(format!("invalid _HLS_skip {value:.32?}")),
            },
            _ => {} // tokens and cache busters are not ours to judge
        }
    }
    if d.part.is_some() && d.msn.is_none() {
        return Err("_HLS_part requires _HLS_msn".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::llhls::playlist::names;

    #[test]
    fn parses_file_names_strictly() {
        let i = "0badcafe";
        assert_eq!(parse_file("llhls.m3u8", i), Some(File::Master));
        assert_eq!(
            parse_file("video_0badcafe.m3u8", i),
            Some(File::Media {
                track: "video".into()
            })
        );
        assert_eq!(
            parse_file("audio_0badcafe_init2.mp4", i),
            Some(File::Init {
                track: "audio".into(),
                id: 2
            })
        );
        assert_eq!(
            parse_file("video_0badcafe_17.m4s", i),
            Some(File::Segment {
                track: "video".into(),
                msn: 17
            })
        );
        assert_eq!(
            parse_file("video_0badcafe_17_3.m4s", i),
            Some(File::Part {
                track: "video".into(),
                msn: 17,
                index: 3
            })
        );
        for bad in [
            "..",
            "../etc/passwd",
            "video_deadbeef.m3u8",
            "video_0badcafe_-1.m4s",
            "video_0badcafe_1_-2.m4s",
            "video_0badcafe_99999999999999999999999.m4s",
            "Video_0badcafe.m3u8",
            "video_0badcafe_1_2_3.m4s",
            "video_0badcafe.mp4",
            "video_0badcafe_initx.mp4",
            "video_0badcafe_+1.m4s",
            "video_0badcafe_1.ts",
            "",
        ] {
            assert_eq!(parse_file(bad, i), None, "{bad}");
        }
    }

    #[test]
    fn parses_directives() {
        assert_eq!(parse_directives(None), Ok(Directives::default()));
        assert_eq!(
            parse_directives(Some("_HLS_msn=5&_HLS_part=2&_HLS_skip=YES&token=x")),
            Ok(Directives {
                msn: Some(5),
                part: Some(2),
                skip: true
            })
        );
        for bad in [
            "_HLS_msn=-1",
            "_HLS_msn=1e3",
            "_HLS_msn=",
            "_HLS_part=1",
            "_HLS_msn=1&_HLS_part=x",
            "_HLS_skip=NO",
            "_HLS_msn=99999999999999999999999",
        ] {
            assert!(parse_directives(Some(bad)).is_err(), "{bad}");
        }
    }

    fn track() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,32}"
    }

    proptest! {
        /// Every name the playlists write parses back to what it names.
        #[test]
        fn written_names_parse_back(
            track in track(),
            instance in "[0-9a-f]{8}",
            msn in any::<u64>(),
            index in any::<u32>(),
            id in any::<u32>(),
        ) {
            prop_assert_eq!(
                parse_file(&names::part(&track, &instance, msn, index), &instance),
                Some(File::Part { track: track.clone(), msn, index })
            );
            prop_assert_eq!(
                parse_file(&names::segment(&track, &instance, msn), &instance),
                Some(File::Segment { track: track.clone(), msn })
            );
            prop_assert_eq!(
                parse_file(&names::init(&track, &instance, id), &instance),
                Some(File::Init { track: track.clone(), id })
            );
            prop_assert_eq!(
                parse_file(&names::media_playlist(&track, &instance), &instance),
                Some(File::Media { track })
            );
        }

        /// Any other string is refused or names a file whose written name
        /// denotes the same thing (leading zeros aside); nothing panics.
        #[test]
        fn any_name_is_refused_or_consistent(file in ".{0,64}", instance in "[0-9a-f]{8}") {
            if let Some(parsed) = parse_file(&file, &instance) {
                let written = match &parsed {
                    File::Master => "llhls.m3u8".to_owned(),
                    File::Media { track } => names::media_playlist(track, &instance),
                    File::Init { track, id } => names::init(track, &instance, *id),
                    File::Segment { track, msn } => names::segment(track, &instance, *msn),
                    File::Part { track, msn, index } => names::part(track, &instance, *msn, *index),
                };
                prop_assert_eq!(parse_file(&written, &instance), Some(parsed));
            }
        }

        /// Directives round-trip, in any order, among other keys.
        #[test]
        fn directives_parse_back(
            msn in any::<u64>(),
            part in proptest::option::of(any::<u32>()),
            skip in any::<bool>(),
            other in "[a-z]{1,8}=[A-Za-z0-9]{0,8}",
            reversed in any::<bool>(),
        ) {
            let mut pairs = vec![format!("_HLS_msn={msn}"), other];
            if let Some(p) = part {
                pairs.push(format!("_HLS_part={p}"));
            }
            if skip {
                pairs.push("_HLS_skip=YES".into());
            }
            if reversed {
                pairs.reverse();
            }
            prop_assert_eq!(
                parse_directives(Some(&pairs.join("&"))),
                Ok(Directives { msn: Some(msn), part, skip })
            );
        }

        #[test]
        fn any_query_is_refused_or_parsed(query in ".{0,80}") {
            let _ = parse_directives(Some(&query));
        }
    }
}
