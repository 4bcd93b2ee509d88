//! The CT/MR viewer's pages, as both nodes serve them: the reformatting view (three planes with
//! linked cursors, slabs, an oblique turn) and the volume rendering, each a page body around
//! the shared scripts (`src/viewer/`, served at `PREFIX/viewer/`). The edge's own viewer and
//! the hub's consult of a referred study differ only in where the frames come from (the
//! `data-socket` the page names: the edge's renderer, or the hub's relay to the referring
//! edge) and in their links, so the markup and the scripts exist once.

use grassroots_wire::referral::SeriesFigures;

use crate::i18n::tr;
use crate::pages::escape;

/// The window presets of every CT viewer (the issue's five: lung, mediastinum, bone, brain,
/// abdomen) as a labelled select with id `id`, its values "centre,width" in HU; `own` first
/// (an empty value: each image's own window) where the viewer offers it.
pub fn window_select(id: &str, own: bool) -> String {
    let presets = [
        ("40,400", tr("Mediastinum")),
        ("-600,1500", tr("Lung")),
        ("400,1800", tr("Bone")),
        ("40,80", tr("Brain")),
        ("40,350", tr("Abdomen")),
    ];
    let mut options = String::new();
    if own {
        options.push_str(&format!(
            r#"<option value="">{}</option>"#,
            tr("The image's own")
        ));
    }
    for (value, label) in presets {
        options.push_str(&format!(r#"<option value="{value}">{label}</option>"#));
    }
    format!(
        r#"<label>{} <select id="{}">{options}</select></label>"#,
        tr("Window"),
        escape(id)
    )
}

/// The reformatting page's body. `socket`: the WebSocket path the frames come from; `top` and
/// `bottom`: HTML (links) around the viewer, already escaped.
pub fn mpr_body(socket: &str, figures: &SeriesFigures, top: &str, bottom: &str) -> String {
    let extents = serde_json::json!({
        "axial": figures.axial,
        "coronal": figures.coronal,
        "sagittal": figures.sagittal,
    })
    .to_string();
    let prefix = crate::assets::PREFIX;
    let pane = |orientation: &str, label: &str| {
        format!(
            r#"<figure class="mpr-pane"><figcaption>{label} <output id="mpr-{orientation}-at"></output></figcaption><div class="mpr-view" tabindex="0" data-orientation="{orientation}" aria-label="{label}"><img alt="{label}"><svg aria-hidden="true"></svg></div></figure>"#
        )
    };
    format!(
        r#"<style>
.mpr-tools {{ display:flex; flex-wrap:wrap; gap:.5rem 1rem; align-items:center; margin-bottom:.5rem; }}
.mpr-grid {{ display:grid; grid-template-columns:repeat(auto-fit, minmax(18rem, 1fr)); gap:.5rem; }}
.mpr-pane {{ margin:0; }}
.mpr-view {{ position:relative; aspect-ratio:1; background:#000; border-radius:6px; overflow:hidden; touch-action:none; }}
.mpr-view:focus-visible {{ outline:3px solid #ffd400; }}
.mpr-view img, .mpr-view svg {{ position:absolute; inset:0; width:100%; height:100%; object-fit:contain; }}
.mpr-view svg {{ pointer-events:none; }}
</style>
{top}
<div class="mpr-tools" role="toolbar" aria-label="{tools}">
{window}
<label>{projection_label} <select id="mpr-projection"><option value="plane">{plane}</option><option value="mip">MIP</option><option value="minip">MinIP</option><option value="average">{average}</option></select></label>
<label>{slab_label} <input type="range" id="mpr-slab" min="0" max="80" step="2" value="20"> <output id="mpr-slab-mm">20 mm</output></label>
<label>{rotation_label} <input type="range" id="mpr-rotation" min="-60" max="60" step="5" value="0"> <output id="mpr-rotation-deg">0°</output></label>
</div>
<div id="mpr" class="mpr-grid" data-socket="{socket}" data-extents="{extents_attr}">
{axial}{coronal}{sagittal}
</div>
<p id="mpr-status" role="status" class="muted"></p>
{bottom}
<script src="{prefix}/viewer/render-socket.js"></script>
<script src="{prefix}/viewer/mpr.js"></script>"#,
        tools = tr("Viewer tools"),
        window = window_select("mpr-window", false),
        projection_label = tr("Projection"),
        plane = tr("Thin plane"),
        average = tr("Average"),
        slab_label = tr("Slab"),
        rotation_label = tr("Oblique turn"),
        socket = escape(socket),
        extents_attr = escape(&extents),
        axial = pane("axial", tr("Axial")),
        coronal = pane("coronal", tr("Coronal")),
        sagittal = pane("sagittal", tr("Sagittal")),
    )
}

/// The volume rendering page's body (`socket`, `top` as for [`mpr_body`]).
pub fn volume_body(socket: &str, figures: &SeriesFigures, top: &str) -> String {
    // The cropping sliders run along the volume's own axes: named after the patient's when
    // those lie along the patient's (an axial series), else after the images' columns, rows
    // and slices.
    let (x_label, y_label, z_label) = if figures.along_patient_axes {
        (tr("Right to left"), tr("Front to back"), tr("Feet to head"))
    } else {
        (tr("Columns"), tr("Rows"), tr("Slices"))
    };
    let prefix = crate::assets::PREFIX;
    let crop = |axis: &str, label: &str, low: &str, high: &str| {
        format!(
            r#"<fieldset class="volume-crop"><legend>{label}</legend><label>{low} <input type="range" id="crop-{axis}0" min="0" max="100" value="0"></label><label>{high} <input type="range" id="crop-{axis}1" min="0" max="100" value="100"></label></fieldset>"#
        )
    };
    format!(
        r#"<style>
.volume-tools {{ display:flex; flex-wrap:wrap; gap:.5rem 1rem; align-items:center; margin-bottom:.5rem; }}
.volume-crop {{ display:flex; gap:.5rem; border:1px solid #ccc; border-radius:6px; padding:.2rem .6rem; }}
.volume-view {{ position:relative; max-width:min(100%, 80vh); aspect-ratio:1; background:#000; border-radius:6px; overflow:hidden; touch-action:none; cursor:grab; }}
.volume-view:focus-visible {{ outline:3px solid #ffd400; }}
.volume-view img {{ width:100%; height:100%; object-fit:contain; }}
</style>
{top}
<div class="volume-tools" role="toolbar" aria-label="{tools}">
<label>{preset_label} <select id="volume-preset"><option value="bone">{bone}</option><option value="soft-tissue">{soft}</option><option value="lung">{lung}</option><option value="vessels">{vessels}</option></select></label>
<span><button type="button" data-turn="0,0">{front}</button> <button type="button" data-turn="90,0">{side}</button> <button type="button" data-turn="0,89">{top_view}</button></span>
{crop_x}{crop_y}{crop_z}
</div>
<div id="volume" class="volume-view" tabindex="0" data-socket="{socket}" aria-label="{view_label}"><img alt="{view_label}"></div>
<p class="muted">{hint}</p>
<p id="volume-status" role="status" class="muted"></p>
<script src="{prefix}/viewer/render-socket.js"></script>
<script src="{prefix}/viewer/volume.js"></script>"#,
        tools = tr("Viewer tools"),
        preset_label = tr("Preset"),
        bone = tr("Bone"),
        soft = tr("Soft tissue"),
        lung = tr("Lung"),
        vessels = tr("Vessels"),
        front = tr("Front"),
        side = tr("Side"),
        top_view = tr("Top"),
        crop_x = crop("x", x_label, tr("Cut from"), tr("Cut to")),
        crop_y = crop("y", y_label, tr("Cut from"), tr("Cut to")),
        crop_z = crop("z", z_label, tr("Cut from"), tr("Cut to")),
        view_label = tr("Volume rendering"),
        hint = tr("Drag to turn the volume, the wheel or + and - to zoom, the arrow keys to turn it by steps."),
        socket = escape(socket),
    )
}

/// The body of the hub's page that shows a referred series' pictures one at a time (any series:
/// radiographs too), rendered where the socket and figures under `base` lead (the referring
/// edge, relayed; the edge's own stack page is `edge/src/study_viewer.rs`): `base/render` is the render socket, `base/stack` each picture's
/// geometry and `base/region` a rectangle's modality values, for measuring a length (in the
/// browser, from Pixel Spacing) or a region's HU (by the edge).
pub fn images_body(base: &str, images: u32, top: &str) -> String {
    let prefix = crate::assets::PREFIX;
    format!(
        r#"<style>
.images-tools {{ display:flex; flex-wrap:wrap; gap:.5rem 1rem; align-items:center; margin-bottom:.5rem; }}
.images-tools fieldset {{ display:flex; flex-wrap:wrap; gap:.25rem .75rem; border:1px solid #ccc; border-radius:6px; padding:.25rem .75rem; margin:0; }}
.images-view {{ position:relative; width:100%; height:calc(100vh - 16rem); min-height:320px; background:#000; border-radius:6px; overflow:hidden; }}
.images-view.measuring {{ touch-action:none; }}
.images-view:focus-visible {{ outline:3px solid #ffd400; }}
.images-view img {{ width:100%; height:100%; object-fit:contain; }}
.images-view svg {{ position:absolute; inset:0; width:100%; height:100%; pointer-events:none; }}
</style>
{top}
<div class="images-tools" role="toolbar" aria-label="{tools}">
{window}
<label>{image_label} <input type="range" id="images-index" min="0" max="{last}" value="{middle}"> <output id="images-at"></output></label>
<fieldset><legend>{mouse}</legend>
<label><input type="radio" name="images-mode" value="scroll" checked> {scroll}</label>
<label><input type="radio" name="images-mode" value="length"> {length}</label>
<label><input type="radio" name="images-mode" value="region"> {region}</label>
</fieldset>
</div>
<div id="images" class="images-view" tabindex="0" data-socket="{socket}" data-stack="{stack}" data-region="{region_url}" data-images="{images}" aria-label="{view_label}"><img alt="{view_label}"><svg id="images-overlay" aria-hidden="true"></svg></div>
<p class="muted">{hint}</p>
<p id="images-measure" role="status"></p>
<p id="images-status" role="status" class="muted"></p>
<script src="{prefix}/viewer/render-socket.js"></script>
<script src="{prefix}/viewer/marks.js"></script>
<script src="{prefix}/viewer/images.js"></script>"#,
        tools = tr("Viewer tools"),
        window = window_select("images-window", true),
        image_label = tr("Image"),
        last = images.saturating_sub(1),
        middle = images / 2,
        mouse = tr("Dragging"),
        scroll = tr("scrolls the images"),
        length = tr("measures a length"),
        region = tr("measures a region's HU"),
        view_label = tr("The series' images"),
        hint = tr("Scroll with the wheel, the arrow keys or the slider."),
        socket = escape(&format!("{base}/render")),
        stack = escape(&format!("{base}/stack")),
        region_url = escape(&format!("{base}/region")),
    )
}

/// The body of a viewer page for a series that is no volume: `message` (English, translated
/// here) and the reason as the renderer gave it.
pub fn viewer_off(id: &str, top: &str, message: &'static str, reason: &str) -> String {
    format!(
        r#"{top}<p class="warning" id="{id}">{} <span translate="no">{}</span></p>"#,
        tr(message),
        escape(&crate::i18n::message_in(crate::nav::lang(), reason)),
    )
}
