//! The CSS a logo may carry (presentation attributes, style attributes, a `<style>` element):
//! properties that paint, and values that load nothing (`url(#id)` only, no `@` rules, no escapes).

use super::{listed, shown};

/// Properties that style a drawing, as presentation attributes or in CSS. Not `cursor` (which
/// loads images) nor custom properties (`--x`, which `var()` could carry anywhere).
pub const PROPERTIES: &str = "\
    alignment-baseline baseline-shift clip clip-path clip-rule color color-interpolation \
    color-interpolation-filters color-rendering direction display dominant-baseline enable-background fill \
    fill-opacity fill-rule filter flood-color flood-opacity font font-family font-feature-settings font-kerning \
    font-size font-size-adjust font-stretch font-style font-variant font-variant-caps font-variant-east-asian \
    font-variant-ligatures font-variant-numeric font-variant-position font-variation-settings font-weight \
    glyph-orientation-horizontal glyph-orientation-vertical image-rendering inline-size isolation letter-spacing \
    lighting-color line-height marker marker-end marker-mid marker-start mask mask-type mix-blend-mode opacity \
    overflow paint-order shape-inside shape-margin shape-padding shape-rendering solid-color solid-opacity \
    stop-color stop-opacity stroke stroke-dasharray stroke-dashoffset stroke-linecap stroke-linejoin \
    stroke-miterlimit stroke-opacity stroke-width text-align text-anchor text-decoration text-decoration-color \
    text-decoration-line text-decoration-style text-indent text-orientation text-rendering text-transform \
    transform-box transform-origin unicode-bidi vector-effect visibility white-space word-spacing writing-mode";

/// Functions a value may call: colours, transforms, filter effects and arithmetic. None of them
/// reads anything; `url()` is checked on its own (`url(#id)` only).
const FUNCTIONS: &str =
    "rgb rgba hsl hsla hwb lab lch oklab oklch matrix translate translatex translatey scale scalex scaley rotate \
     skew skewx skewy calc min max clamp blur brightness contrast drop-shadow grayscale hue-rotate invert opacity \
     saturate sepia";

/// `#id`: a part of the same document, and nothing else.
pub fn is_fragment(s: &str) -> bool {
    s.strip_prefix('#').is_some_and(|id| {
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    })
}

/// One attribute's or property's value. `Err` says what in it could load something or hide a
/// name from this check (an escape such as `\75rl(` is `url(` to CSS).
pub fn value(v: &str) -> Result<(), String> {
    if v.contains('\\') {
        return Err("a CSS escape (\\), which a logo does not need".into());
    }
    if v.contains("/*") {
        return Err("a CSS comment, which a logo does not need".into());
    }
    // CSS names are ASCII-case-insensitive; lowering ASCII keeps every byte where it was.
    let lower = v.to_ascii_lowercase();
    for (open, _) in lower.match_indices('(') {
        let start =
            lower[..open].rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')).map_or(0, |p| p + 1);
        let name = &lower[start..open];
        if name == "url" {
            let close = v[open..].find(')').map_or(v.len(), |c| open + c + 1);
            let inner = v[open + 1..close].trim_end_matches(')').trim().trim_matches(['"', '\'']);
            if !is_fragment(inner) {
                return Err(format!(
                    "`{}`, which loads something: a logo may use url(#id) of its own parts only",
                    shown(&v[start..close])
                ));
            }
        } else if !name.is_empty() && !listed(FUNCTIONS, name) {
            return Err(format!("the CSS function {}(), which a logo may not use", shown(name)));
        }
    }
    Ok(())
}

/// A style attribute, or one rule's block: `property: value; …`, each property on the list.
pub fn declarations(block: &str) -> Result<(), String> {
    for decl in block.split(';').map(str::trim).filter(|d| !d.is_empty()) {
        let Some((property, v)) = decl.split_once(':') else {
            return Err(format!("`{}`, which is not a CSS declaration", shown(decl)));
        };
        let property = property.trim().to_ascii_lowercase();
        // Inkscape keeps its own settings as `-inkscape-…` properties, which browsers ignore.
        if !listed(PROPERTIES, &property) && !property.starts_with("-inkscape-") {
            return Err(format!("the CSS property {}, which a logo may not use", shown(&property)));
        }
        value(v)?;
    }
    Ok(())
}

/// A `<style>` element's text: rules of plain selectors (`.st0`, `#id`, `g > path`) and blocks
/// of declarations; no `@` rules (`@import`, `@font-face` load things).
pub fn stylesheet(css: &str) -> Result<(), String> {
    for (bad, what) in [
        ("@", "an @ rule (such as @import), which a logo does not need"),
        ("\\", "a CSS escape (\\), which a logo does not need"),
        ("/*", "a CSS comment, which a logo does not need"),
        ("<", "markup, which a stylesheet does not hold"),
    ] {
        if css.contains(bad) {
            return Err(what.into());
        }
    }
    let mut rest = css.trim_start();
    while !rest.is_empty() {
        let Some((selector, block, after)) =
            rest.split_once('{').and_then(|(s, r)| r.split_once('}').map(|(b, a)| (s.trim(), b, a)))
        else {
            return Err(format!("`{}`, which is not a CSS rule", shown(rest)));
        };
        let plain = |c: char| c.is_ascii_alphanumeric() || " \t\r\n_-#.,:>*+~".contains(c);
        if selector.is_empty() || !selector.chars().all(plain) {
            return Err(format!("the selector `{}`, which is not a plain one", shown(selector)));
        }
        declarations(block)?;
        rest = after.trim_start();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_document_urls_pass() {
        for ok in ["url(#a)", "url( '#grad-1' )", "URL(\"#b.c\")", "rgb(1, 2, 3) url(#x)", "matrix(1 0 0 1 0 0)"] {
            assert!(value(ok).is_ok(), "{ok}");
        }
        for bad in
            ["url(a)", "url(#)", "url(#a b)", "url(//x)", "url(", "x url(data:x)", "image(x)", "src(x)", "var(--a)"]
        {
            assert!(value(bad).is_err(), "{bad}");
        }
        assert!(!is_fragment("#a/b") && !is_fragment("a") && is_fragment("#linearGradient1"));
    }

    #[test]
    fn a_stylesheet_is_rules_of_known_properties() {
        assert!(stylesheet(" .a, #b > g:first-child { fill: red; stroke:none }\n path{opacity:.5;} ").is_ok());
        assert!(stylesheet("").is_ok());
        for bad in [".a { fill: red", ".a fill: red }", "{ fill: red }", "a[href] { fill: red }", ".a { content: 'x' }"]
        {
            assert!(stylesheet(bad).is_err(), "{bad}");
        }
        assert!(declarations("fill:red;;stroke : blue ; -inkscape-font-specification:'Sans'").is_ok());
        assert!(declarations("fill").is_err());
    }
}
