//! The organisation's brand on end-user pages (`BRAND_NAME`, `BRAND_LOGO`, `BRAND_COLOR`,
//! `BRAND_SUPPORT_URL`): checked values, and the logo file read and type-checked at start.

mod css;
mod svg;

use std::path::{Path, PathBuf};

use url::Url;

/// Logos larger than this are refused at start.
pub const MAX_LOGO_BYTES: usize = 256 * 1024;
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// The brand settings as configured (the logo as a path; [`Logo::read`] loads it).
#[derive(Debug, Clone, Default)]
pub struct BrandSettings {
    pub name: Option<String>,
    pub logo: Option<PathBuf>,
    /// `#rrggbb`, lower-case.
    pub color: Option<String>,
    pub support_url: Option<Url>,
}

impl BrandSettings {
    pub fn parse_name(raw: &str) -> Result<String, String> {
        if raw.chars().count() > 80 || raw.chars().any(char::is_control) {
            return Err("must be at most 80 characters, without control characters".into());
        }
        Ok(raw.to_owned())
    }

    pub fn parse_color(raw: &str) -> Result<String, String> {
        let hex = raw.strip_prefix('#').filter(|h| h.len() == 6 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        match hex {
            Some(h) => Ok(format!("#{}", h.to_ascii_lowercase())),
            None => Err(format!("must be a colour like #1a73e8, got `{}`", raw.chars().take(20).collect::<String>())),
        }
    }

    pub fn parse_support_url(raw: &str) -> Result<Url, String> {
        match Url::parse(raw) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
            _ => Err("must be an http or https URL".into()),
        }
    }
}

/// A brand setting that cannot be used: which one, and what is wrong with it (the configuration
/// turns it into its own error, so both read the same).
#[derive(Debug, thiserror::Error)]
#[error("{setting} {problem}")]
pub struct BrandError {
    pub setting: &'static str,
    pub problem: String,
}

/// The brand as end-user pages use it: the logo loaded.
#[derive(Debug, Clone, Default)]
pub struct Brand {
    pub name: Option<String>,
    pub logo: Option<Logo>,
    pub color: Option<String>,
    pub support_url: Option<String>,
}

impl Brand {
    /// Load the logo named by the settings (checked again: the file may have changed since).
    pub fn load(s: &BrandSettings) -> Result<Self, BrandError> {
        let logo = match &s.logo {
            Some(path) => Some(Logo::read(path).map_err(|problem| BrandError { setting: "BRAND_LOGO", problem })?),
            None => None,
        };
        Ok(Self {
            name: s.name.clone(),
            logo,
            color: s.color.clone(),
            support_url: s.support_url.as_ref().map(|u| u.to_string()),
        })
    }

    /// Who asks for access, in a sentence: the organisation's name, or a neutral phrase.
    pub fn who(&self) -> &str {
        self.name.as_deref().unwrap_or("Your organisation")
    }
}

/// The logo's bytes and content type.
#[derive(Debug, Clone)]
pub struct Logo {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
}

impl Logo {
    /// Read and check a logo file: at most [`MAX_LOGO_BYTES`], a PNG (by its magic bytes) or an
    /// SVG whose root element is `<svg>` and whose every part is on the allowlist of `svg` (it is
    /// also served with a CSP that runs nothing, but a logo that could is refused outright).
    pub fn read(path: &Path) -> Result<Self, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot be read ({}): {e}", path.display()))?;
        if meta.len() > MAX_LOGO_BYTES as u64 {
            return Err(format!("is larger than {} KiB ({})", MAX_LOGO_BYTES / 1024, path.display()));
        }
        let bytes = std::fs::read(path).map_err(|e| format!("cannot be read ({}): {e}", path.display()))?;
        Self::check(bytes)
    }

    pub fn check(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() > MAX_LOGO_BYTES {
            return Err(format!("is larger than {} KiB", MAX_LOGO_BYTES / 1024));
        }
        if bytes.starts_with(PNG_MAGIC) {
            return Ok(Self { bytes, content_type: "image/png" });
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| "is neither a PNG nor an SVG file".to_owned())?;
        if !svg_root(text) {
            return Err("is neither a PNG nor an SVG file (an SVG's root element must be <svg>)".into());
        }
        svg::check(text)?;
        Ok(Self { bytes, content_type: "image/svg+xml" })
    }
}

/// Whether the first element, after an XML declaration and comments, is `<svg` (or a DOCTYPE, which
/// the SVG check refuses with its reason).
fn svg_root(text: &str) -> bool {
    let mut rest = text.trim_start_matches('\u{feff}').trim_start();
    loop {
        if let Some(r) = rest.strip_prefix("<?") {
            match r.find("?>") {
                Some(i) => rest = r[i + 2..].trim_start(),
                None => return false,
            }
        } else if let Some(r) = rest.strip_prefix("<!--") {
            match r.find("-->") {
                Some(i) => rest = r[i + 3..].trim_start(),
                None => return false,
            }
        } else if rest.starts_with("<!") {
            // A DOCTYPE: the SVG check refuses it, and says why.
            return true;
        } else {
            return rest.starts_with("<svg")
                && rest[4..].starts_with(|c: char| c.is_whitespace() || c == '>' || c == '/');
        }
    }
}

/// Whether `name` is one of the space-separated words of `list` (the allowlists are kept as text,
/// so they read as lists and not as a column of strings).
fn listed(list: &str, name: &str) -> bool {
    list.split_ascii_whitespace().any(|w| w == name)
}

/// Text from the file, for a one-line message: at most 60 characters, control characters as spaces.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(60).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if s.chars().count() > 60 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_six_hex_digits() {
        assert_eq!(BrandSettings::parse_color("#1A73e8").unwrap(), "#1a73e8");
        for bad in ["1a73e8", "#1a73e", "#1a73e88", "#1a73eg", "red", "#fff"] {
            assert!(BrandSettings::parse_color(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_short_and_printable() {
        assert!(BrandSettings::parse_name(&"a".repeat(80)).is_ok());
        assert!(BrandSettings::parse_name(&"a".repeat(81)).is_err());
        assert!(BrandSettings::parse_name("Acme\nInc").is_err());
        assert_eq!(Brand::default().who(), "Your organisation");
        assert_eq!(Brand { name: Some("Acme".into()), ..Default::default() }.who(), "Acme");
    }

    #[test]
    fn a_logo_file_is_read_up_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logo.png");
        let mut edge = PNG_MAGIC.to_vec();
        edge.resize(MAX_LOGO_BYTES, 0);
        std::fs::write(&path, &edge).unwrap();
        assert_eq!(Logo::read(&path).unwrap().bytes.len(), MAX_LOGO_BYTES);
        edge.push(0);
        std::fs::write(&path, &edge).unwrap();
        assert!(Logo::read(&path).unwrap_err().contains("256 KiB"));
    }

    #[test]
    fn attributes_that_merely_contain_on_are_not_event_handlers() {
        let svg = r#"<svg version="1.1"><text font-weight="bold" id="on" class="onion">icon on</text></svg>"#;
        assert!(Logo::check(svg.into()).is_ok());
        assert!(Logo::check(b"<svg><g\tonclick = 'x'/></svg>".to_vec()).is_err());
    }

    #[test]
    fn support_urls_are_http() {
        assert!(BrandSettings::parse_support_url("https://help.example.com/x").is_ok());
        assert!(BrandSettings::parse_support_url("javascript:alert(1)").is_err());
        assert!(BrandSettings::parse_support_url("mailto:a@example.com").is_err());
    }

    #[test]
    fn a_png_or_a_clean_svg_is_a_logo() {
        let mut png = PNG_MAGIC.to_vec();
        png.extend_from_slice(&[0; 10]);
        assert_eq!(Logo::check(png).unwrap().content_type, "image/png");
        let svg =
            r#"<?xml version="1.0"?><!-- logo --><svg xmlns="http://www.w3.org/2000/svg"><rect width="1"/></svg>"#;
        assert_eq!(Logo::check(svg.into()).unwrap().content_type, "image/svg+xml");
        assert!(Logo::check(b"<svg><ellipse onmouseover='x'/></svg>".to_vec()).is_err());
    }

    #[test]
    fn anything_else_is_refused() {
        assert!(Logo::check(b"GIF89a....".to_vec()).is_err());
        assert!(Logo::check(b"<html><svg></svg></html>".to_vec()).is_err());
        assert!(Logo::check(b"<svgx></svgx>".to_vec()).is_err());
        assert!(Logo::check(b"<svg><script>alert(1)</script></svg>".to_vec()).is_err());
        assert!(Logo::check(b"<svg onload=\"alert(1)\"></svg>".to_vec()).is_err());
        assert!(Logo::check(b"<svg><a href=\"javascript:x\"/></svg>".to_vec()).is_err());
        let mut big = PNG_MAGIC.to_vec();
        big.resize(MAX_LOGO_BYTES + 1, 0);
        assert!(Logo::check(big).is_err());
        let mut edge = PNG_MAGIC.to_vec();
        edge.resize(MAX_LOGO_BYTES, 0);
        assert!(Logo::check(edge).is_ok());
    }

    #[test]
    fn text_that_is_not_an_svg_is_said_to_be_neither_png_nor_svg() {
        let p = Logo::check(b"GIF89a, not a logo".to_vec()).unwrap_err();
        assert!(p.starts_with("is neither a PNG nor an SVG file"), "{p}");
    }

    #[test]
    fn shown_keeps_sixty_characters_and_cuts_what_is_longer() {
        assert_eq!(shown(&"a".repeat(60)), "a".repeat(60));
        assert_eq!(shown(&"a".repeat(61)), format!("{}…", "a".repeat(60)));
    }
}

#[cfg(test)]
mod svg_tests;
