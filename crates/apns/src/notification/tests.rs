use super::*;
use proptest::prelude::*;

const TOKEN: &str = "6a3c8f0e9d1b2a4c5e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";

fn note(push_type: PushType, payload: &'static [u8]) -> Notification {
    Notification::new(
        DeviceToken::parse(TOKEN).unwrap(),
        push_type,
        Bytes::from_static(payload),
    )
}

#[test]
fn tokens_are_hex_and_lowercased() {
    let t = DeviceToken::parse(&TOKEN.to_uppercase()).unwrap();
    assert_eq!(t.as_str(), TOKEN);
    for bad in ["", "abc", "zz", "0g", &"a".repeat(MAX_TOKEN_HEX + 2)] {
        let e = DeviceToken::parse(bad).unwrap_err();
        assert_eq!(e.reason(), Some(Reason::BadDeviceToken), "{bad:?}");
    }
}

#[test]
fn payload_limits_depend_on_push_type() {
    static BIG: [u8; 4097] = [b' '; 4097];
    let e = note(PushType::Alert, &BIG).validate().unwrap_err();
    assert_eq!(
        e,
        NotificationError::PayloadTooLarge {
            size: 4097,
            limit: 4096
        }
    );
    assert_eq!(e.reason(), Some(Reason::PayloadTooLarge));
    let mut voip = note(PushType::Voip, &BIG);
    voip.topic = Some(Topic::parse("com.example.app.voip").unwrap());
    voip.validate().unwrap();
    static VOIP_BIG: [u8; 5121] = [b' '; 5121];
    let mut voip = note(PushType::Voip, &VOIP_BIG);
    voip.topic = Some(Topic::parse("com.example.app.voip").unwrap());
    assert_eq!(
        voip.validate().unwrap_err(),
        NotificationError::PayloadTooLarge {
            size: 5121,
            limit: 5120
        }
    );
    assert_eq!(
        note(PushType::Alert, b"").validate().unwrap_err(),
        NotificationError::PayloadEmpty
    );
}

#[test]
fn background_pushes_may_not_use_priority_10() {
    let mut n = note(PushType::Background, b"{}");
    n.priority = Some(Priority::Immediate);
    let e = n.validate().unwrap_err();
    assert_eq!(e.reason(), Some(Reason::BadPriority));
    n.priority = Some(Priority::Conserve);
    n.validate().unwrap();
    assert_eq!(PushType::Background.default_priority(), Priority::Conserve);
    assert_eq!(PushType::Alert.default_priority(), Priority::Immediate);
}

#[test]
fn topic_must_carry_the_push_types_suffix() {
    let mut n = note(PushType::LiveActivity, b"{}");
    n.topic = Some(Topic::parse("com.example.app").unwrap());
    let e = n.validate().unwrap_err();
    assert_eq!(e.reason(), Some(Reason::BadTopic));
    assert!(e.to_string().contains(".push-type.liveactivity"), "{e}");
    n.topic = Some(Topic::for_push_type("com.example.app", &PushType::LiveActivity).unwrap());
    assert_eq!(
        n.topic.as_ref().unwrap().as_str(),
        "com.example.app.push-type.liveactivity"
    );
    n.validate().unwrap();
    // An already-suffixed bundle is not suffixed twice.
    let t = Topic::for_push_type("com.example.app.voip", &PushType::Voip).unwrap();
    assert_eq!(t.as_str(), "com.example.app.voip");
}

#[test]
fn every_known_push_type_round_trips_and_unknown_ones_stay_open() {
    for t in PushType::KNOWN {
        assert_eq!(&PushType::parse(t.as_str()).unwrap(), t);
    }
    assert_eq!(
        PushType::parse("newtype").unwrap(),
        PushType::Other("newtype".into())
    );
    assert_eq!(
        PushType::parse("Not A Type").unwrap_err().reason(),
        Some(Reason::InvalidPushType)
    );
}

#[test]
fn priorities_are_10_5_1() {
    assert_eq!(Priority::from_u8(10).unwrap().as_str(), "10");
    assert_eq!(Priority::from_u8(5).unwrap(), Priority::Conserve);
    assert_eq!(Priority::from_u8(1).unwrap(), Priority::Low);
    assert_eq!(
        Priority::from_u8(7).unwrap_err().reason(),
        Some(Reason::BadPriority)
    );
}

#[test]
fn collapse_ids_are_at_most_64_bytes() {
    CollapseId::parse(&"x".repeat(64)).unwrap();
    let e = CollapseId::parse(&"é".repeat(33)).unwrap_err();
    assert_eq!(e, NotificationError::CollapseIdTooLong { len: 66 });
    assert_eq!(e.reason(), Some(Reason::BadCollapseId));
}

#[test]
fn apns_ids_encode_lowercase_and_parse_back() {
    let id = ApnsId::new();
    let mut buf = [0u8; 36];
    let s = id.encode(&mut buf).to_owned();
    assert_eq!(s, s.to_lowercase());
    assert_eq!(ApnsId::parse(&s).unwrap(), id);
    assert_eq!(ApnsId::parse(&s.to_uppercase()).unwrap(), id);
    assert_eq!(
        ApnsId::parse("not-a-uuid").unwrap_err().reason(),
        Some(Reason::BadMessageId)
    );
    assert_eq!(Expiration::from_unix(0), Expiration::Immediately);
    assert_eq!(Expiration::from_unix(5).as_unix(), 5);
}

proptest! {
    #[test]
    fn any_even_hex_string_parses_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 1..100)) {
        let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
        let t = DeviceToken::parse(&hex).unwrap();
        prop_assert_eq!(t.as_str(), hex.to_lowercase());
        prop_assert_eq!(DeviceToken::parse(t.as_str()).unwrap(), t);
    }

    #[test]
    fn strings_with_a_non_hex_character_are_refused(s in "[0-9a-f]{0,20}[g-z][0-9a-f]{0,20}") {
        prop_assert!(DeviceToken::parse(&s).is_err());
    }
}

/// A batch of ids: distinct, ascending, version 7, and stamped with the millisecond they were
/// made in.
#[test]
fn many_ids_are_distinct_v7_ids_of_now() {
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let ids = ApnsId::many(10_000);
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert_eq!(ids.len(), 10_000);
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len());
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ascending");
    for id in &ids {
        assert_eq!(id.as_uuid().get_version_num(), 7);
        let (secs, nanos) = id.as_uuid().get_timestamp().expect("v7").to_unix();
        let ms = secs * 1000 + u64::from(nanos) / 1_000_000;
        assert!(
            (before..=after).contains(&ms),
            "{ms} not in {before}..={after}"
        );
    }
    assert!(ApnsId::many(0).is_empty());
}

#[test]
fn a_token_from_bytes_is_its_lowercase_hex() {
    let t = DeviceToken::from_bytes(&[0x00, 0xAB, 0x7f, 0xff]).unwrap();
    assert_eq!(t, DeviceToken::parse("00AB7FFF").unwrap());
    assert_eq!(t.as_str(), "00ab7fff");
    let mut buf = [0u8; MAX_TOKEN_HEX / 2];
    assert_eq!(t.to_bytes(&mut buf), &[0x00, 0xAB, 0x7f, 0xff]);
    assert!(DeviceToken::from_bytes(&[]).is_err());
    assert!(
        DeviceToken::from_bytes(&[1; 101]).is_err(),
        "over 200 hex characters"
    );
}
