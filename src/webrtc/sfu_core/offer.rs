//! What a viewer's session is built from: the str0m configurations every
//! viewer's `Rtc` starts as, with the codecs OvenPlayer and browsers expect.

use str0m::RtcConfig;
use str0m::bwe::Bitrate;
use str0m::config::DtlsCert;
use str0m::format::{Codec, FormatParams};
use str0m::media::Frequency;
use str0m::rtp::{Extension, ExtensionMap};

use super::SfuError;
use crate::config::WebRtcConfig;

pub(super) const VIDEO_PT: u8 = 102;
pub(super) const VIDEO_RTX_PT: u8 = 103;
/// The profile-level-id offered: constrained baseline 3.1, what every
/// browser accepts. With `level-asymmetry-allowed=1` a browser decodes
/// the ladder's High profile streams at any level, as OME relies on.
const VIDEO_PROFILE_LEVEL: u32 = 0x42e01f;

/// Without bandwidth estimation (`plain`) and with it (`estimating`).
#[derive(Clone)]
pub struct Templates {
    pub(super) plain: RtcConfig,
    pub(super) estimating: RtcConfig,
}

impl Templates {
    /// What every viewer's Rtc starts from, without and with bandwidth
    /// estimation.
    pub fn new(config: &WebRtcConfig) -> Result<Templates, SfuError> {
        let provider = str0m::crypto::from_feature_flags();
        // One certificate for every viewer: generating a key per viewer
        // would cost milliseconds of CPU per join.
        let cert: DtlsCert = provider
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| SfuError::Rtc("cannot generate a DTLS certificate".into()))?;
        let mut template = RtcConfig::new()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs()
            .set_dtls_cert(cert)
            .set_send_buffer_video(config.nack_buffer_packets)
            .set_send_buffer_audio(64);
        template.codec_config().add_h264(
            VIDEO_PT.into(),
            Some(VIDEO_RTX_PT.into()),
            true,
            VIDEO_PROFILE_LEVEL,
        );
        // The transcoder's Opus is stereo: say so (RFC 7587 stereo and
        // sprop-stereo), or a browser decodes it as mono. OvenPlayer copies
        // these into its answer only when the offer has them.
        template.codec_config().add_config(
            crate::webrtc::feed::OPUS_PT.into(),
            None,
            Codec::Opus,
            Frequency::FORTY_EIGHT_KHZ,
            Some(2),
            FormatParams {
                min_p_time: Some(10),
                use_inband_fec: Some(true),
                stereo: Some(true),
                sprop_stereo: Some(true),
                ..Default::default()
            },
        );
        let estimating = template
            .clone()
            .enable_bwe(Some(Bitrate::kbps(u64::from(config.start_bitrate_kbps))));
        // Without an estimator, transport-wide congestion control feedback
        // is of no use, and str0m would keep a record of the last 1,000
        // packets sent for it (about 90 KB a viewer, benches/README.md):
        // viewers that do not estimate are offered no transport-cc.
        let mut without_twcc = ExtensionMap::empty();
        for (id, ext) in ExtensionMap::standard().iter() {
            if *ext != Extension::TransportSequenceNumber {
                without_twcc.set(id, ext.clone());
            }
        }
        Ok(Templates {
            plain: template.set_extension_map(without_twcc),
            estimating,
        })
    }
}
