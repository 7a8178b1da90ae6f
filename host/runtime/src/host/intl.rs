//! `nango:scripts/intl`: collation and Unicode normalization with ICU4X's
//! data, and the IANA time zones with chrono-tz's, for a JavaScript engine
//! built without ICU (the TypeScript SDK makes `localeCompare`,
//! `Intl.Collator`, `normalize` and en-US's `Intl.DateTimeFormat` of these).

use std::cmp::Ordering;
use std::collections::HashMap;

use icu_collator::options::{AlternateHandling, CaseLevel, CollatorOptions, Strength};
use icu_collator::preferences::{CollationCaseFirst, CollationNumericOrdering};
use icu_collator::{CollatorBorrowed, CollatorPreferences};
use icu_locale_core::Locale;
use icu_normalizer::{ComposingNormalizerBorrowed, DecomposingNormalizerBorrowed};

use super::HostState;
use super::log::utf8_lossy;
use crate::bindings::intl::{
    self, CaseFirst, CollatorInfo, CollatorOptions as Requested, NormalForm, Sensitivity, ZoneInfo,
};

/// Node's default locale where scripts run (and the original's).
const DEFAULT_LOCALE: &str = "en-US";
/// Collators of different options one execution may hold.
pub(crate) const MAX_COLLATORS: usize = 256;
/// V8's message for a tag that is not a well-formed language tag.
const BAD_TAG: &str = "Incorrect locale information provided";
/// The longest tag taken (V8 refuses longer ones too): parsing a tag's
/// variants costs the square of their count.
const MAX_TAG_BYTES: usize = 255;
/// The most text `normalize` gives back (a character can grow eighteen
/// times in NFKD); past it, V8's message for a string too long.
pub(crate) const MAX_NORMALIZED_BYTES: usize = 64 << 20;
const TOO_LONG: &str = "Invalid string length";

/// The collators an execution made, by number; the same options give the
/// same collator.
#[derive(Default)]
pub(crate) struct Collators {
    made: Vec<CollatorBorrowed<'static>>,
    by_options: HashMap<Key, CollatorInfo>,
    /// The default collator, for a number this execution did not make.
    fallback: Option<CollatorBorrowed<'static>>,
}

#[derive(PartialEq, Eq, Hash)]
struct Key {
    locale: String,
    sensitivity: u8,
    ignore_punctuation: bool,
    numeric: Option<bool>,
    case_first: Option<u8>,
}

fn parse_locale(tag: &str) -> Result<Locale, String> {
    let tag = if tag.is_empty() { DEFAULT_LOCALE } else { tag };
    if tag.len() > MAX_TAG_BYTES {
        return Err(BAD_TAG.to_string());
    }
    Locale::try_from_str(tag).map_err(|_| BAD_TAG.to_string())
}

fn make(requested: &Requested) -> Result<(CollatorBorrowed<'static>, CollatorInfo), String> {
    let locale = parse_locale(&requested.locale)?;
    let mut prefs = CollatorPreferences::from(&locale);
    // Options win over the tag's `-u-kn` and `-u-kf`, as in ECMA-402.
    if let Some(numeric) = requested.numeric {
        prefs.numeric_ordering = Some(if numeric {
            CollationNumericOrdering::True
        } else {
            CollationNumericOrdering::False
        });
    }
    if let Some(case_first) = requested.case_first {
        prefs.case_first = Some(match case_first {
            CaseFirst::UpperFirst => CollationCaseFirst::Upper,
            CaseFirst::LowerFirst => CollationCaseFirst::Lower,
            CaseFirst::Off => CollationCaseFirst::False,
        });
    }
    // ECMA-402's sensitivities as ICU's strength and case level (V8's).
    let mut options = CollatorOptions::default();
    let (strength, case_level) = match requested.sensitivity {
        Sensitivity::Base => (Strength::Primary, CaseLevel::Off),
        Sensitivity::Accent => (Strength::Secondary, CaseLevel::Off),
        Sensitivity::Case => (Strength::Primary, CaseLevel::On),
        Sensitivity::Variant => (Strength::Tertiary, CaseLevel::Off),
    };
    options.strength = Some(strength);
    options.case_level = Some(case_level);
    if requested.ignore_punctuation {
        options.alternate_handling = Some(AlternateHandling::Shifted);
    }
    let collator = CollatorBorrowed::try_new(prefs, options)
        .map_err(|e| format!("no collation data for `{}`: {e}", locale.id))?;
    let resolved = collator.resolved_options();
    let info = CollatorInfo {
        id: 0,
        locale: resolved_tag(&locale, requested),
        numeric: resolved.numeric == CollationNumericOrdering::True,
        case_first: match resolved.case_first {
            CollationCaseFirst::Upper => CaseFirst::UpperFirst,
            CollationCaseFirst::Lower => CaseFirst::LowerFirst,
            _ => CaseFirst::Off,
        },
    };
    Ok((collator, info))
}

/// The tag `resolvedOptions()` reports: the language, script and region
/// asked for, with the tag's collation keywords (`co`, `kf`, `kn`) that an
/// option did not replace, as ECMA-402 resolves them.
fn resolved_tag(locale: &Locale, requested: &Requested) -> String {
    let mut tag = locale.id.to_string();
    let mut first = true;
    for (key, value) in locale.extensions.unicode.keywords.iter() {
        let key = key.as_str();
        let replaced = match key {
            "kn" => requested.numeric.is_some(),
            "kf" => requested.case_first.is_some(),
            "co" => false,
            _ => true,
        };
        if replaced {
            continue;
        }
        tag.push_str(if first { "-u-" } else { "-" });
        first = false;
        tag.push_str(key);
        let value = value.to_string();
        if !value.is_empty() && value != "true" {
            tag.push('-');
            tag.push_str(&value);
        }
    }
    tag
}

impl Collators {
    fn open(&mut self, requested: Requested) -> Result<CollatorInfo, String> {
        let key = Key {
            locale: requested.locale.clone(),
            sensitivity: requested.sensitivity as u8,
            ignore_punctuation: requested.ignore_punctuation,
            numeric: requested.numeric,
            case_first: requested.case_first.map(|c| c as u8),
        };
        if let Some(info) = self.by_options.get(&key) {
            return Ok(info.clone());
        }
        if self.made.len() >= MAX_COLLATORS {
            return Err(format!(
                "this execution already made {MAX_COLLATORS} collators of different options"
            ));
        }
        let (collator, mut info) = make(&requested)?;
        info.id = u32::try_from(self.made.len()).unwrap_or(u32::MAX);
        self.made.push(collator);
        self.by_options.insert(key, info.clone());
        Ok(info)
    }

    fn compare(&mut self, id: u32, a: &str, b: &str) -> Ordering {
        let index = usize::try_from(id).unwrap_or(usize::MAX);
        if index >= self.made.len() {
            // Not one this execution made: the default collator.
            if self.fallback.is_none() {
                let default = Requested {
                    locale: String::new(),
                    sensitivity: Sensitivity::Variant,
                    ignore_punctuation: false,
                    numeric: None,
                    case_first: None,
                };
                self.fallback = make(&default).ok().map(|(collator, _)| collator);
            }
            return match &self.fallback {
                Some(collator) => collator.compare(a, b),
                None => a.cmp(b),
            };
        }
        self.made[index].compare(a, b)
    }
}

/// The IANA zone `zone` (any case) at `epoch_ms`, or V8's message.
fn zone_at(zone: &str, epoch_ms: f64) -> Result<ZoneInfo, String> {
    use chrono::{Offset, TimeZone};
    use chrono_tz::{OffsetComponents, OffsetName};
    let tz = chrono_tz::Tz::from_str_insensitive(zone)
        .map_err(|_| format!("Invalid time zone specified: {zone}"))?;
    // JavaScript's dates reach ±8.64e15 ms; chrono's fewer years. Past
    // them the offset of chrono's last representable instant holds.
    let ms = if epoch_ms.is_finite() {
        epoch_ms.clamp(-8.2e15, 8.2e15) as i64
    } else {
        0
    };
    let at = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    let local = tz.offset_from_utc_datetime(&at.naive_utc());
    let offset = local.fix().local_minus_utc();
    // Daylight time as CLDR names it: the year's larger offset. The
    // database's own flag is negative in Dublin's winter (its standard
    // time is the summer's), which CLDR calls Greenwich Mean Time.
    let daylight = {
        use chrono::Datelike;
        let year = at.year();
        let offset_on = |month: u32| {
            chrono::NaiveDate::from_ymd_opt(year, month, 15)
                .and_then(|d| d.and_hms_opt(12, 0, 0))
                .map(|t| tz.offset_from_utc_datetime(&t).fix().local_minus_utc())
        };
        match (offset_on(1), offset_on(7)) {
            (Some(january), Some(july)) => offset > january.min(july),
            _ => !local.dst_offset().is_zero(),
        }
    };
    Ok(ZoneInfo {
        name: tz.name().to_string(),
        offset_minutes: offset / 60,
        abbreviation: local.abbreviation().unwrap_or_default().to_string(),
        daylight,
    })
}

impl intl::Host for HostState {
    fn zone_at(
        &mut self,
        zone: String,
        epoch_ms: f64,
    ) -> wasmtime::Result<Result<ZoneInfo, String>> {
        Ok(zone_at(&zone, epoch_ms))
    }

    fn collator(&mut self, options: Requested) -> wasmtime::Result<Result<CollatorInfo, String>> {
        Ok(self.collators.open(options))
    }

    fn compare(&mut self, collator: u32, a: Vec<u8>, b: Vec<u8>) -> wasmtime::Result<i8> {
        self.charge(a.len() + b.len());
        let (a, b) = (utf8_lossy(a), utf8_lossy(b));
        Ok(match self.collators.compare(collator, &a, &b) {
            Ordering::Less => -1,
            Ordering::Equal => 0,
            Ordering::Greater => 1,
        })
    }

    fn normalize(
        &mut self,
        form: NormalForm,
        s: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, String>> {
        self.charge(s.len());
        Ok(normalize(form, &utf8_lossy(s)).map(String::into_bytes))
    }
}

/// A string that refuses to grow past [`MAX_NORMALIZED_BYTES`].
struct Bounded(String);

impl std::fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.0.len() + s.len() > MAX_NORMALIZED_BYTES {
            return Err(std::fmt::Error);
        }
        self.0.push_str(s);
        Ok(())
    }
}

fn normalize(form: NormalForm, text: &str) -> Result<String, String> {
    let mut out = Bounded(String::with_capacity(text.len().min(MAX_NORMALIZED_BYTES)));
    match form {
        NormalForm::Nfc => ComposingNormalizerBorrowed::new_nfc().normalize_to(text, &mut out),
        NormalForm::Nfkc => ComposingNormalizerBorrowed::new_nfkc().normalize_to(text, &mut out),
        NormalForm::Nfd => DecomposingNormalizerBorrowed::new_nfd().normalize_to(text, &mut out),
        NormalForm::Nfkd => DecomposingNormalizerBorrowed::new_nfkd().normalize_to(text, &mut out),
    }
    .map_err(|_| TOO_LONG.to_string())?;
    Ok(out.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requested(locale: &str, sensitivity: Sensitivity) -> Requested {
        Requested {
            locale: locale.into(),
            sensitivity,
            ignore_punctuation: false,
            numeric: None,
            case_first: None,
        }
    }

    fn sorted(c: &mut Collators, id: u32, words: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        v.sort_by(|a, b| c.compare(id, a, b));
        v
    }

    #[test]
    fn the_default_collation_is_nodes_not_code_units() {
        let mut c = Collators::default();
        let id = c.open(requested("", Sensitivity::Variant)).unwrap().id;
        // Node: ['_a', '-a', 'a', 'A', 'á', 'b', 'B', 'Z'] (punctuation
        // first, case and accents after the letter).
        assert_eq!(
            sorted(&mut c, id, &["Z", "b", "a", "B", "A", "á", "-a", "_a"]),
            ["_a", "-a", "a", "A", "á", "b", "B", "Z"]
        );
        assert_eq!(c.compare(id, "a", "a"), Ordering::Equal);
    }

    #[test]
    fn sensitivities_numeric_and_case_first_are_ecma_402s() {
        let mut c = Collators::default();
        let base = c.open(requested("en", Sensitivity::Base)).unwrap().id;
        assert_eq!(c.compare(base, "a", "Á"), Ordering::Equal);
        let accent = c.open(requested("en", Sensitivity::Accent)).unwrap().id;
        assert_eq!(c.compare(accent, "a", "A"), Ordering::Equal);
        assert_eq!(c.compare(accent, "a", "á"), Ordering::Less);
        let case = c.open(requested("en", Sensitivity::Case)).unwrap().id;
        assert_eq!(c.compare(case, "a", "á"), Ordering::Equal);
        assert_eq!(c.compare(case, "a", "A"), Ordering::Less);
        let mut numeric = requested("en", Sensitivity::Variant);
        numeric.numeric = Some(true);
        let info = c.open(numeric).unwrap();
        assert!(info.numeric);
        assert_eq!(c.compare(info.id, "item 9", "item 10"), Ordering::Less);
        let from_tag = c.open(requested("en-u-kn", Sensitivity::Variant)).unwrap();
        assert!(from_tag.numeric, "the tag's -u-kn");
        assert_eq!(from_tag.locale, "en-u-kn");
        let mut replaced = requested("de-DE-u-kn-true-kf-upper", Sensitivity::Variant);
        replaced.numeric = Some(false);
        let replaced = c.open(replaced).unwrap();
        assert!(!replaced.numeric);
        assert_eq!(replaced.locale, "de-DE-u-kf-upper");
        let mut upper = requested("en", Sensitivity::Variant);
        upper.case_first = Some(CaseFirst::UpperFirst);
        let info = c.open(upper).unwrap();
        assert_eq!(c.compare(info.id, "A", "a"), Ordering::Less);
        // Swedish sorts ä after z; English beside a.
        let sv = c.open(requested("sv", Sensitivity::Variant)).unwrap().id;
        assert_eq!(c.compare(sv, "ä", "z"), Ordering::Greater);
        let en = c.open(requested("en", Sensitivity::Variant)).unwrap().id;
        assert_eq!(c.compare(en, "ä", "z"), Ordering::Less);
        let mut punct = requested("en", Sensitivity::Variant);
        punct.ignore_punctuation = true;
        let punct = c.open(punct).unwrap().id;
        assert_eq!(c.compare(punct, "a-b", "ab"), Ordering::Equal);
    }

    #[test]
    fn time_zones_by_name_in_any_case_with_their_offsets_then() {
        // 2026-01-02T03:04:05Z and 2026-07-02T03:04:05Z.
        let (winter, summer) = (1_767_323_045_000.0, 1_782_961_445_000.0);
        let ny = zone_at("america/new_york", winter).unwrap();
        assert_eq!(
            (
                ny.name.as_str(),
                ny.offset_minutes,
                ny.abbreviation.as_str()
            ),
            ("America/New_York", -300, "EST")
        );
        assert_eq!(
            zone_at("America/New_York", summer).unwrap().offset_minutes,
            -240
        );
        assert_eq!(zone_at("Asia/Kolkata", winter).unwrap().offset_minutes, 330);
        assert_eq!(zone_at("UTC", winter).unwrap().offset_minutes, 0);
        assert_eq!(
            zone_at("Mars/Olympus", winter).unwrap_err(),
            "Invalid time zone specified: Mars/Olympus"
        );
        assert_eq!(zone_at("UTC", f64::NAN).unwrap().offset_minutes, 0);
    }

    #[test]
    fn normalization_forms_and_a_bound_on_what_they_give() {
        assert_eq!(normalize(NormalForm::Nfd, "é").unwrap(), "e\u{301}");
        assert_eq!(normalize(NormalForm::Nfc, "e\u{301}").unwrap(), "é");
        assert_eq!(normalize(NormalForm::Nfkc, "\u{fb01}").unwrap(), "fi");
        // U+FDFA: 3 bytes in, 33 out.
        let big = "\u{fdfa}".repeat(MAX_NORMALIZED_BYTES / 30);
        assert_eq!(normalize(NormalForm::Nfkd, &big).unwrap_err(), TOO_LONG);
        let long_tag = format!("en{}", "-abcdefgh".repeat(40));
        assert_eq!(parse_locale(&long_tag).unwrap_err(), BAD_TAG);
    }

    #[test]
    fn options_are_reused_tags_checked_and_collators_bounded() {
        let mut c = Collators::default();
        let a = c.open(requested("de-DE", Sensitivity::Base)).unwrap();
        assert_eq!(a.locale, "de-DE");
        let again = c.open(requested("de-DE", Sensitivity::Base)).unwrap();
        assert_eq!(a.id, again.id);
        assert_eq!(
            c.open(requested("en_US!", Sensitivity::Base)).unwrap_err(),
            BAD_TAG
        );
        assert_eq!(
            c.open(requested("", Sensitivity::Base)).unwrap().locale,
            "en-US"
        );
        for i in c.made.len()..MAX_COLLATORS {
            let mut r = requested("en", Sensitivity::Variant);
            r.locale = format!("en-x-{i}");
            c.open(r).unwrap();
        }
        let err = c.open(requested("fr", Sensitivity::Base)).unwrap_err();
        assert!(err.contains("256 collators"), "{err}");
        // An id that is not one made compares as the default.
        assert_eq!(c.compare(9_999, "a", "B"), Ordering::Less);
    }
}
