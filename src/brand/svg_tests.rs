//! The logo's SVG check, case by case: the ways script or a fetch got past the old blocklist are
//! refused, and logos as drawing programs write them still pass.

use super::Logo;

fn refused(svg: &str) -> String {
    match Logo::check(svg.as_bytes().to_vec()) {
        Ok(_) => panic!("refused: {svg}"),
        Err(problem) => problem,
    }
}

fn passes(svg: &str) {
    if let Err(problem) = Logo::check(svg.as_bytes().to_vec()) {
        panic!("a logo: {problem}\n{svg}");
    }
}

const SVG_NS: &str = r#"xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink""#;

#[test]
fn an_animation_that_sets_an_event_handler_is_refused() {
    let problem = refused(&format!(
        r#"<svg {SVG_NS}><rect width="9" height="9"><set attributeName="onmouseover" to="alert(1)"/></rect></svg>"#
    ));
    assert!(problem.contains("<set>"), "{problem}");
    refused(&format!(r#"<svg {SVG_NS}><animate attributeName="href" values="javascript:alert(1)"/></svg>"#));
    refused(&format!(r#"<svg {SVG_NS}><animateTransform attributeName="transform" type="rotate"/></svg>"#));
}

#[test]
fn an_entity_encoded_javascript_link_is_refused() {
    let problem = refused(&format!(r#"<svg {SVG_NS}><use xlink:href="&#106;avascript:alert(1)"/></svg>"#));
    assert!(problem.contains("javascript:alert(1)"), "said what it links to: {problem}");
    refused(&format!(r#"<svg {SVG_NS}><use href="&#x6A;&#x61;vascript&#58;alert(1)"/></svg>"#));
    refused(&format!(r#"<svg {SVG_NS}><a xlink:href="&#106;avascript:alert(1)"><rect width="9"/></a></svg>"#));
    // Nor anything else outside the logo itself.
    refused(&format!(r##"<svg {SVG_NS}><use href="https://evil.example/sprite.svg#a"/></svg>"##));
    refused(&format!(r#"<svg {SVG_NS}><use href="data:image/svg+xml,&lt;svg/&gt;"/></svg>"#));
}

#[test]
fn a_foreign_object_holding_html_is_refused() {
    let problem = refused(&format!(
        r#"<svg {SVG_NS}><foreignObject width="9" height="9"><iframe xmlns="http://www.w3.org/1999/xhtml" src="https://evil.example/"/></foreignObject></svg>"#
    ));
    assert!(problem.contains("<foreignObject>"), "{problem}");
    // HTML elements need no foreignObject to be refused.
    refused(
        r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:h="http://www.w3.org/1999/xhtml"><h:iframe src="x"/></svg>"#,
    );
}

#[test]
fn css_that_loads_anything_is_refused() {
    for (svg, says) in [
        (r##"<rect fill="url(https://evil.example/a.svg#p)"/>"##, "https://evil.example"),
        (r#"<rect style="fill:url(https://evil.example/p)"/>"#, "https://evil.example"),
        (r#"<rect style="fill:URL( //evil.example/p)"/>"#, "evil.example"),
        (r#"<rect style="fill:\75rl(//evil.example/p)"/>"#, ""),
        (r#"<rect style="mask:image-set('//evil.example/p' 1x)"/>"#, "image-set"),
        (r#"<rect cursor="url(//evil.example/c)"/>"#, ""),
        (r#"<style>rect { fill: url(//evil.example/p) }</style>"#, "evil.example"),
        (r#"<style>@import url(//evil.example/s.css);</style>"#, ""),
        (r#"<style>@import "//evil.example/s.css";</style>"#, ""),
    ] {
        let problem = refused(&format!("<svg {SVG_NS}>{svg}</svg>"));
        assert!(problem.contains(says), "{svg}: {problem}");
    }
}

#[test]
fn declarations_processing_instructions_and_unknown_parts_are_refused() {
    let problem = refused(
        r#"<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY j "javascript:">]><svg xmlns="http://www.w3.org/2000/svg"><use href="&j;x"/></svg>"#,
    );
    assert!(problem.contains("DOCTYPE"), "{problem}");
    refused(
        r#"<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd"><svg/>"#,
    );
    refused(
        r#"<?xml-stylesheet href="//evil.example/s.xsl" type="text/xsl"?><svg xmlns="http://www.w3.org/2000/svg"/>"#,
    );
    refused(r#"<?xml version="1.0" encoding="ISO-8859-1"?><svg xmlns="http://www.w3.org/2000/svg"/>"#);
    refused(&format!(r#"<svg {SVG_NS}><image href="https://evil.example/p.png"/></svg>"#));
    refused(&format!(r#"<svg {SVG_NS}><filter id="f"><feImage href="//evil.example/p"/></filter></svg>"#));
    assert!(refused(&format!(r#"<svg {SVG_NS}><rect xml:base="https://evil.example/"/></svg>"#)).contains("xml:base"));
    refused(&format!(r#"<svg {SVG_NS}><rect width="9" unknown="x"/></svg>"#));
    refused(&format!(r#"<svg {SVG_NS}><g><script>alert(1)</script></g></svg>"#));
    refused(&format!(r#"<svg {SVG_NS}><g><script><![CDATA[alert(1)]]></script></g></svg>"#));
    refused(&format!(r#"<svg {SVG_NS}><rect onclick="alert(1)"/></svg>"#));
    refused(&format!(r#"<svg {SVG_NS}><style>rect {{ behavior: url(#x) }}</style></svg>"#));
    refused(&format!(r#"<svg {SVG_NS}><rect style="--x: 1"/></svg>"#));
    refused(&format!(r#"<svg {SVG_NS}><rect width="9""#));
    // A metadata element is inert, but a link on it is checked all the same.
    refused(
        r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:sodipodi="http://sodipodi.sourceforge.net/DTD/sodipodi-0.dtd"><sodipodi:namedview xlink:href="javascript:x"/></svg>"#,
    );
    refused(
        r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:sodipodi="http://sodipodi.sourceforge.net/DTD/sodipodi-0.dtd"><sodipodi:namedview style="background:url(//evil.example/p)"/></svg>"#,
    );
}

/// An Inkscape 1.x file, trimmed: its metadata, named view, gradients, style attributes, flowed
/// text and a `url(#…)` fill.
const INKSCAPE: &str = r##"<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<!-- Created with Inkscape (http://www.inkscape.org/) -->

<svg
   width="64mm"
   height="16mm"
   viewBox="0 0 64 16"
   version="1.1"
   id="svg1"
   inkscape:version="1.3.2 (091e20e, 2023-11-25)"
   sodipodi:docname="acme.svg"
   xmlns:inkscape="http://www.inkscape.org/namespaces/inkscape"
   xmlns:sodipodi="http://sodipodi.sourceforge.net/DTD/sodipodi-0.dtd"
   xmlns:xlink="http://www.w3.org/1999/xlink"
   xmlns="http://www.w3.org/2000/svg"
   xmlns:svg="http://www.w3.org/2000/svg"
   xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
   xmlns:cc="http://creativecommons.org/ns#"
   xmlns:dc="http://purl.org/dc/elements/1.1/">
  <sodipodi:namedview
     id="namedview1"
     pagecolor="#ffffff"
     bordercolor="#666666"
     borderopacity="1.0"
     inkscape:showpageshadow="2"
     inkscape:pageopacity="0.0"
     inkscape:document-units="mm"
     inkscape:zoom="2.8"
     inkscape:current-layer="layer1">
    <inkscape:page x="0" y="0" width="64" height="16" id="page2" margin="0" bleed="0" />
  </sodipodi:namedview>
  <defs
     id="defs1">
    <linearGradient
       id="linearGradient1"
       inkscape:collect="always">
      <stop
         style="stop-color:#1a73e8;stop-opacity:1;"
         offset="0"
         id="stop1" />
      <stop
         style="stop-color:#1a73e8;stop-opacity:0;"
         offset="1"
         id="stop2" />
    </linearGradient>
    <linearGradient
       inkscape:collect="always"
       xlink:href="#linearGradient1"
       id="linearGradient2"
       x1="0"
       y1="8"
       x2="16"
       y2="8"
       gradientUnits="userSpaceOnUse"
       gradientTransform="matrix(1,0,0,1.5,0,-4)" />
    <radialGradient id="glow" cx="50%" cy="50%" r="50%" fx="50%" fy="50%">
      <stop offset="0%" stop-color="rgb(255, 255, 255)" stop-opacity="0.8" />
      <stop offset="100%" stop-color="hsl(210, 80%, 50%)" stop-opacity="0" />
    </radialGradient>
    <clipPath clipPathUnits="userSpaceOnUse" id="clip1">
      <rect x="0" y="0" width="16" height="16" rx="3" ry="3" id="rect3" />
    </clipPath>
    <filter style="color-interpolation-filters:sRGB" inkscape:label="Blur" id="filter1" x="-0.1" y="-0.1" width="1.2" height="1.2">
      <feGaussianBlur stdDeviation="0.4" result="blur" id="feGaussianBlur1" />
      <feOffset in="blur" dx="0.2" dy="0.2" result="offset" />
      <feMerge><feMergeNode in="offset" /><feMergeNode in="SourceGraphic" /></feMerge>
    </filter>
  </defs>
  <g
     inkscape:label="Layer 1"
     inkscape:groupmode="layer"
     id="layer1"
     transform="translate(-12.5,-40.2)">
    <path
       style="fill:url(#linearGradient2);fill-opacity:1;stroke:#0b3d91;stroke-width:0.264583;stroke-linecap:round;stroke-linejoin:round;stroke-dasharray:none;filter:url(#filter1)"
       d="m 12.5,40.2 h 16 v 16 h -16 z M 14,42 c 1.2,0 2.5,1.3 2.5,2.5 0,1.2 -1.3,2.5 -2.5,2.5 z"
       id="path1"
       clip-path="url(#clip1)"
       sodipodi:nodetypes="ccccc"
       inkscape:connector-curvature="0" />
    <circle cx="20.5" cy="48.2" r="3" fill="url(#glow)" id="circle1" />
    <use xlink:href="#circle1" x="4" id="use1" />
    <text
       xml:space="preserve"
       style="font-style:normal;font-weight:bold;font-size:8.46667px;line-height:1.25;font-family:'DejaVu Sans';-inkscape-font-specification:'DejaVu Sans Bold';text-align:start;text-anchor:start;fill:#202124;stroke-width:0.264583"
       x="31"
       y="51"
       id="text1"><tspan
         sodipodi:role="line"
         id="tspan1"
         x="31"
         y="51">Acme &amp; Co</tspan></text>
  </g>
  <metadata
     id="metadata1">
    <rdf:RDF>
      <cc:Work
         rdf:about="">
        <dc:format>image/svg+xml</dc:format>
        <dc:type
           rdf:resource="http://purl.org/dc/dcmitype/StillImage" />
        <dc:title>Acme</dc:title>
      </cc:Work>
    </rdf:RDF>
  </metadata>
</svg>
"##;

#[test]
fn logos_as_drawing_programs_write_them_pass() {
    passes(INKSCAPE);
    passes(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><title>Acme</title><desc>A square</desc><rect width="10" height="10" fill="#1a73e8"/></svg>"##,
    );
    // Illustrator's classes in a style element.
    passes(
        r#"<?xml version="1.0" encoding="utf-8"?>
<svg version="1.1" id="Layer_1" xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" x="0px" y="0px"
	 viewBox="0 0 100 40" style="enable-background:new 0 0 100 40;" xml:space="preserve">
<style type="text/css">
	.st0{fill:#E30613;}
	.st1{fill:none;stroke:#1D1D1B;stroke-width:2;stroke-miterlimit:10;}
	.st2, #Layer_1 > g text{font-family:'Helvetica', Arial, sans-serif; font-size:12px;}
</style>
<g>
	<polygon class="st0" points="10,30 20,10 30,30 	"/>
	<polyline class="st1" points="40,30 50,10 60,30"/>
	<line class="st1" x1="0" y1="35" x2="100" y2="35"/>
	<ellipse cx="80" cy="20" rx="8" ry="6" fill-rule="evenodd" opacity=".5"/>
	<text transform="matrix(1 0 0 1 64 38)" class="st2">ACME</text>
</g>
</svg>
"#,
    );
    // Sketch's markup, a symbol and a mask.
    passes(
        r##"<svg width="24px" height="24px" viewBox="0 0 24 24" version="1.1" xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:sketch="http://www.bohemiancoding.com/sketch/ns">
    <defs><symbol id="dot" viewBox="0 0 2 2"><circle cx="1" cy="1" r="1"/></symbol>
    <mask id="m" maskUnits="userSpaceOnUse"><rect width="24" height="24" fill="white"/></mask></defs>
    <g id="Page-1" stroke="none" stroke-width="1" fill="none" fill-rule="evenodd" sketch:type="MSPage">
        <use href="#dot" width="4" height="4" mask="url(#m)"/>
    </g>
</svg>"##,
    );
}

const SODIPODI_NS: &str = r#"xmlns:sodipodi="http://sodipodi.sourceforge.net/DTD/sodipodi-0.dtd""#;

#[test]
fn each_refusal_says_which_rule_and_what_it_found() {
    // An event handler is a script, on an SVG element and on a drawing program's alike.
    let p = refused(&format!(r#"<svg {SVG_NS}><rect onclick="alert(1)"/></svg>"#));
    assert!(p.contains("script or event handler"), "{p}");
    let p = refused(&format!(r#"<svg {SVG_NS} {SODIPODI_NS}><sodipodi:namedview onclick="alert(1)"/></svg>"#));
    assert!(p.contains("script or event handler"), "{p}");
    // An xlink attribute that is not a link is refused by name, with its prefix, on both.
    let p = refused(&format!(r##"<svg {SVG_NS}><rect xlink:title="#a"/></svg>"##));
    assert!(p.contains("<rect> has the attribute xlink:title"), "{p}");
    let p = refused(&format!(r##"<svg {SVG_NS} {SODIPODI_NS}><sodipodi:namedview xlink:title="#a"/></svg>"##));
    assert!(p.contains("has the attribute xlink:title"), "{p}");
    // A link on a drawing program's element may point at the logo's own parts only.
    passes(&format!(r##"<svg {SVG_NS} {SODIPODI_NS}><sodipodi:namedview xlink:href="#a"/></svg>"##));
    let p = refused(&format!(
        r#"<svg {SVG_NS} {SODIPODI_NS}><sodipodi:namedview xlink:href="https://evil.example/"/></svg>"#
    ));
    assert!(p.contains("links to `https://evil.example/`"), "{p}");
    // The whole url() that would load something is quoted.
    let p = refused(&format!(r##"<svg {SVG_NS}><rect fill="url(https://evil.example/a.svg#p)"/></svg>"##));
    assert!(p.contains("`url(https://evil.example/a.svg#p)`"), "{p}");
}

#[test]
fn a_style_element_takes_css_and_an_id_and_nothing_else() {
    passes(&format!(r#"<svg {SVG_NS}><style id="s" type="text/css">rect {{ fill: red }}</style></svg>"#));
    for attr in [r#"type="text/javascript""#, r#"class="x""#, r#"media="print""#] {
        let p = refused(&format!(r#"<svg {SVG_NS}><style {attr}>rect {{ fill: red }}</style></svg>"#));
        assert!(p.contains("<style> has the attribute"), "{attr}: {p}");
    }
    // Elsewhere `type` is a filter's parameter.
    passes(&format!(r#"<svg {SVG_NS}><filter id="f"><feColorMatrix type="saturate" values="0"/></filter></svg>"#));
}

#[test]
fn the_root_must_be_svg_and_a_logo_has_at_most_100_000_parts() {
    let p = super::svg::check(r#"<rect xmlns="http://www.w3.org/2000/svg"/>"#).unwrap_err();
    assert!(p.contains("root element must be <svg>"), "{p}");
    super::svg::check(&format!("<svg {SVG_NS}>{}</svg>", "<g/>".repeat(1_000))).unwrap();
    let p = super::svg::check(&format!("<svg {SVG_NS}>{}</svg>", "<g/>".repeat(100_001))).unwrap_err();
    assert!(p.contains("well-formed"), "{p}");
}
