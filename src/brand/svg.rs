//! The SVG logo check: the file is parsed as XML, and every element, attribute and link must be on
//! an allowlist of what draws a picture, so what is served can neither run script nor load anything.

// An allowlist, not a blocklist: SVG can run script or fetch in more ways than a list of bad words
// can name (`<set attributeName="onclick">`, `&#106;avascript:`, `<foreignObject>`, CSS `url()`).
// The check runs on the tree a browser builds too (entities decoded, namespaces resolved), and a
// file that is not well-formed XML is refused, so the two parsers cannot read it differently.

use roxmltree::{Attribute, Document, Node, NodeType, ParsingOptions};

use super::{css, listed, shown};

const SVG: &str = "http://www.w3.org/2000/svg";
const XLINK: &str = "http://www.w3.org/1999/xlink";
const XML: &str = "http://www.w3.org/XML/1998/namespace";

/// Drawing programs' own namespaces. Browsers render nothing of these and give them no behaviour
/// (event handlers belong to HTML and SVG elements only), so their elements and attributes may
/// stay; links on them are still checked.
const EDITOR_NAMESPACES: &[&str] = &[
    "http://www.inkscape.org/namespaces/inkscape",
    "http://sodipodi.sourceforge.net/DTD/sodipodi-0.dtd",
    "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "http://creativecommons.org/ns#",
    "http://web.resource.org/cc/",
    "http://purl.org/dc/elements/1.1/",
    "http://purl.org/dc/terms/",
    "http://www.bohemiancoding.com/sketch/ns",
];

/// Shapes, text, paint servers, clipping, masks and filters that read no outside resource: no
/// `script`, `a`, `image`, `feImage`, `foreignObject`, `iframe`, and no animation (`set`, `animate…`).
const ELEMENTS: &str =
    "svg g defs title desc metadata symbol use style path rect circle ellipse line polyline polygon text tspan \
     textPath linearGradient radialGradient stop pattern clipPath mask marker filter feBlend feColorMatrix \
     feComponentTransfer feComposite feConvolveMatrix feDiffuseLighting feDisplacementMap feDistantLight \
     feDropShadow feFlood feFuncA feFuncB feFuncG feFuncR feGaussianBlur feMerge feMergeNode feMorphology \
     feOffset fePointLight feSpecularLighting feSpotLight feTile feTurbulence";

/// Attributes that are not CSS properties (those are in [`css::PROPERTIES`]): geometry, units,
/// transforms and filter parameters. No `on…`, no animation timing, no `xml:base`.
const ATTRIBUTES: &str =
    "id class version baseProfile width height x y x1 y1 x2 y2 cx cy r rx ry fx fy fr d points pathLength viewBox \
     preserveAspectRatio transform offset gradientUnits gradientTransform spreadMethod patternUnits \
     patternContentUnits patternTransform clipPathUnits maskUnits maskContentUnits filterUnits primitiveUnits \
     markerUnits markerWidth markerHeight refX refY orient dx dy rotate textLength lengthAdjust startOffset \
     method spacing side in in2 result stdDeviation mode type values operator k1 k2 k3 k4 order kernelMatrix \
     divisor bias targetX targetY edgeMode preserveAlpha surfaceScale diffuseConstant specularConstant \
     specularExponent kernelUnitLength scale xChannelSelector yChannelSelector radius baseFrequency numOctaves \
     seed stitchTiles azimuth elevation z pointsAtX pointsAtY pointsAtZ limitingConeAngle tableValues slope \
     intercept amplitude exponent lang";

/// Why an SVG logo cannot be served, in words that finish "BRAND_LOGO …"; `Ok` when every part
/// of it is on the lists.
pub fn check(text: &str) -> Result<(), String> {
    // A DOCTYPE can declare entities that hide what an attribute says; an SVG needs none.
    if text.to_ascii_lowercase().contains("<!doctype") {
        return Err("is an SVG with a DOCTYPE, which a logo does not need: remove the <!DOCTYPE …> line".into());
    }
    declared_utf8(text)?;
    let options = ParsingOptions { allow_dtd: false, nodes_limit: 100_000, ..ParsingOptions::default() };
    let doc = Document::parse_with_options(text, options).map_err(|e| format!("is not a well-formed SVG file: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "svg" || !matches!(root.tag_name().namespace(), None | Some(SVG)) {
        return Err("is neither a PNG nor an SVG file (an SVG's root element must be <svg>)".into());
    }
    for node in doc.descendants() {
        match node.node_type() {
            NodeType::Element => check_element(node)?,
            NodeType::PI => {
                let target = node.pi().map_or("", |pi| pi.target);
                return Err(format!("is an SVG with the processing instruction <?{}?>: remove it", shown(target)));
            }
            // Text and comments draw nothing and run nothing (a style element's text is checked
            // with its element).
            NodeType::Root | NodeType::Text | NodeType::Comment => {}
        }
    }
    Ok(())
}

/// The bytes are read as UTF-8, so the file must not tell a browser to read them otherwise.
fn declared_utf8(text: &str) -> Result<(), String> {
    let Some(decl) = text.trim_start_matches('\u{feff}').strip_prefix("<?xml") else { return Ok(()) };
    if !decl.starts_with(char::is_whitespace) {
        return Ok(());
    }
    let decl = &decl[..decl.find("?>").unwrap_or(decl.len())];
    match decl.split_once("encoding").and_then(|(_, rest)| rest.split(['"', '\'']).nth(1)) {
        Some(enc) if !enc.eq_ignore_ascii_case("utf-8") => {
            Err(format!("is an SVG that declares the encoding {}: save it as UTF-8", shown(enc)))
        }
        _ => Ok(()),
    }
}

fn check_element(node: Node) -> Result<(), String> {
    let name = node.tag_name().name();
    match node.tag_name().namespace() {
        Some(ns) if EDITOR_NAMESPACES.contains(&ns) => {
            for attr in node.attributes() {
                check_editor_attribute(name, &attr)?;
            }
            Ok(())
        }
        None | Some(SVG) => {
            if name == "script" {
                return Err(SCRIPT.into());
            }
            if !listed(ELEMENTS, name) {
                return Err(format!(
                    "is an SVG with the element <{}>, which a logo may not hold: it may draw (shapes, paths, text, \
                     gradients, clipping, filters) but not move, link, embed or run anything",
                    shown(name)
                ));
            }
            for attr in node.attributes() {
                check_attribute(name, &attr)?;
            }
            if name == "style" {
                let text: String = node.children().filter_map(|c| c.text()).collect();
                css::stylesheet(&text).map_err(|what| format!("is an SVG whose <style> holds {what}"))?;
            }
            Ok(())
        }
        Some(ns) => {
            Err(format!("is an SVG with the element <{}> of {}, which a logo may not hold", shown(name), shown(ns)))
        }
    }
}

const SCRIPT: &str = "is an SVG with a script or event handler: remove it (logos are pictures)";

fn check_attribute(element: &str, attr: &Attribute) -> Result<(), String> {
    let (name, value) = (attr.name(), attr.value());
    let refused = || refused_attribute(element, attr);
    match attr.namespace() {
        None if name.to_ascii_lowercase().starts_with("on") => Err(SCRIPT.into()),
        None if name == "href" => own_part(element, value),
        None if name == "style" => {
            css::declarations(value).map_err(|what| format!("is an SVG whose <{element}> style attribute holds {what}"))
        }
        // `<style type>` says which language the text is in: only CSS is checked here.
        None if element == "style" && name == "type" && !value.eq_ignore_ascii_case("text/css") => Err(refused()),
        None if element == "style" && name != "type" && name != "id" => Err(refused()),
        None if listed(ATTRIBUTES, name) || listed(css::PROPERTIES, name) => {
            css::value(value).map_err(|what| format!("is an SVG whose <{element}> {name} holds {what}"))
        }
        Some(XLINK) if name == "href" => own_part(element, value),
        Some(XML) if name == "space" || name == "lang" => Ok(()),
        Some(ns) if EDITOR_NAMESPACES.contains(&ns) => Ok(()),
        _ => Err(refused()),
    }
}

/// On an editor's element: its own attributes and plain ones are inert; a link is still checked.
fn check_editor_attribute(element: &str, attr: &Attribute) -> Result<(), String> {
    match attr.namespace() {
        None if attr.name().to_ascii_lowercase().starts_with("on") => Err(SCRIPT.into()),
        // Not drawn, so not styled either; checked all the same, in case a browser thinks otherwise.
        None if attr.name() == "style" => css::declarations(attr.value())
            .map_err(|what| format!("is an SVG whose <{element}> style attribute holds {what}")),
        None | Some(XML) => Ok(()),
        Some(ns) if EDITOR_NAMESPACES.contains(&ns) => Ok(()),
        Some(XLINK) if attr.name() == "href" => own_part(element, attr.value()),
        Some(_) => Err(refused_attribute(element, attr)),
    }
}

fn refused_attribute(element: &str, attr: &Attribute) -> String {
    let prefix = match attr.namespace() {
        Some(XML) => "xml:",
        Some(XLINK) => "xlink:",
        _ => "",
    };
    format!("is an SVG whose <{element}> has the attribute {prefix}{}, which a logo may not hold", shown(attr.name()))
}

/// A link may only point at a part of the logo itself (`#id`): never a file, a site or a script.
fn own_part(element: &str, href: &str) -> Result<(), String> {
    if css::is_fragment(href) {
        return Ok(());
    }
    Err(format!(
        "is an SVG whose <{element}> links to `{}`: a logo may only point at its own parts (href=\"#id\")",
        shown(href)
    ))
}
