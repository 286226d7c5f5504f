//! A plan with its chosen visuals becomes a storyboard the engine renders: every scene spoken
//! by the requested voice (its length set by the narration), subtitles on, its picture moved
//! by the plan's camera, crossfades between scenes; a scene without a picture is a designed
//! title card (a gradient from the style's palette, with its title).

use serde_json::{Value, json};

use crate::plan::{Plan, PlanMotion};
use crate::request::PromptRequest;
use crate::visuals::Chosen;
use crate::voices::Voiced;

/// Two-colour gradients for cards; the style picks a palette, the scene a pair in it.
const PALETTES: &[[(&str, &str); 3]] = &[
    [("#0f2027", "#2c5364"), ("#1d2b64", "#4b6cb7"), ("#141e30", "#35577d")],
    [("#42275a", "#734b6d"), ("#5b247a", "#1bcedf"), ("#3a1c71", "#d76d77")],
    [("#0b3d2e", "#2f7a5c"), ("#134e5e", "#71b280"), ("#1e3c2f", "#5a8f69")],
    [("#7a2e0e", "#d1913c"), ("#8e2de2", "#ff6a00"), ("#5a1f0b", "#c0392b")],
];

fn palette(style: Option<&str>, title: &str) -> &'static [(&'static str, &'static str); 3] {
    let seed = blake3::hash(format!("{}|{title}", style.unwrap_or("")).as_bytes());
    &PALETTES[seed.as_bytes()[0] as usize % PALETTES.len()]
}

fn motion(m: PlanMotion) -> Value {
    match m {
        PlanMotion::ZoomIn => json!({"type": "ken-burns", "zoom_from": 1.0, "zoom_to": 1.15}),
        PlanMotion::ZoomOut => json!({"type": "ken-burns", "zoom_from": 1.15, "zoom_to": 1.0}),
        PlanMotion::PanLeft => json!({"type": "ken-burns", "zoom_from": 1.1, "zoom_to": 1.1, "pan": "left"}),
        PlanMotion::PanRight => json!({"type": "ken-burns", "zoom_from": 1.1, "zoom_to": 1.1, "pan": "right"}),
        PlanMotion::Still => json!({"type": "none"}),
    }
}

/// The storyboard (a spec, as JSON) for `plan` with `visuals[i]` for scene `i`, each scene's
/// narration the recording `voiced[i]` when a remote voice spoke it (else the local voice
/// speaks the text).
pub fn storyboard(req: &PromptRequest, plan: &Plan, visuals: &[Chosen], voiced: &[Voiced]) -> Value {
    let (width, height) = req.dimensions();
    let colours = palette(req.style.as_deref(), &plan.title);
    let mut voice = json!({"engine": "espeak-ng", "name": espeak_voice(&req.language)});
    if let Some(v) = req.voice.as_ref().filter(|v| crate::request::is_local_voice(&v.engine)) {
        voice = json!({"engine": v.engine});
        if let Some(n) = &v.name {
            voice["name"] = json!(n);
        }
        if let Some(s) = v.speed {
            voice["speed"] = json!(s);
        }
    }
    let last = plan.scenes.len().saturating_sub(1);
    let scenes: Vec<Value> = plan
        .scenes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let narration = match voiced.get(i) {
                Some(v) => {
                    let mut n = json!({"audio": v.file, "transcript": v.transcript});
                    if let Some(t) = &v.word_times {
                        n["word_times"] = json!(t);
                    }
                    n
                }
                None => json!({"text": s.narration}),
            };
            let mut scene = json!({"narration": narration, "padding": 0.3});
            match visuals.get(i).and_then(Chosen::file) {
                Some(file) if visuals[i].video => {
                    // A clip plays (looped to the narration's length), silent under the voice.
                    scene["video"] = json!({"file": file, "loop": true});
                    scene["fit"] = json!("cover");
                    if let Some(t) = &s.title {
                        scene["overlay"] = json!({"text": t, "position": "top-center"});
                    }
                }
                Some(file) => {
                    scene["image"] = json!(file);
                    scene["fit"] = json!("cover");
                    scene["motion"] = motion(s.motion);
                    if let Some(t) = &s.title {
                        scene["overlay"] = json!({"text": t, "position": "top-center"});
                    }
                }
                None => {
                    let (from, to) = colours[i % colours.len()];
                    scene["background"] = json!({"gradient": {"from": from, "to": to, "angle": 135}});
                    // A card always says something: its title, else what the scene is about.
                    let about: Vec<String> = s.visual.search_terms.iter().take(2).map(|t| capitalized(t)).collect();
                    match &s.title {
                        Some(t) => scene["title"] = json!(t),
                        None if !about.is_empty() => scene["title"] = json!(about.join(" · ")),
                        None => {}
                    }
                }
            }
            if i < last {
                scene["transition"] = json!({"type": "crossfade", "duration": 0.4});
            }
            scene
        })
        .collect();
    let mut spec = json!({
        "version": 1,
        "output": {"width": width, "height": height, "fps": 30},
        "voice": voice,
        "subtitles": {"enabled": true, "style": "word-highlight"},
        "scenes": scenes,
    });
    if let Some(m) = &req.music {
        spec["music"] = json!({"file": m, "volume": 0.25});
    }
    spec
}

fn capitalized(s: &str) -> String {
    let mut c = s.trim().chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// The espeak-ng voice for a language tag (espeak-ng names voices by language: `en-us`, `de`,
/// `pt-br`).
fn espeak_voice(language: &str) -> String {
    match language.to_ascii_lowercase().as_str() {
        "en" => "en-us".into(),
        other => other.replace('_', "-"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plan::{PlanScene, PlanVisual};

    fn plan() -> Plan {
        let scene = |n: &str, t: Option<&str>, m| PlanScene {
            narration: n.into(),
            title: t.map(str::to_string),
            visual: PlanVisual { search_terms: vec!["lava".into()], image_prompt: "lava".into() },
            motion: m,
        };
        Plan {
            title: "Volcanoes".into(),
            scenes: vec![
                scene("Volcanoes.", Some("Volcanoes"), PlanMotion::Still),
                scene("Lava flows.", None, PlanMotion::PanLeft),
            ],
        }
    }

    #[test]
    fn a_storyboard_parses_as_a_spec_with_cards_and_pictures() {
        let req = PromptRequest::from_json(
            json!({"topic": "volcanoes", "size": {"width": 320, "height": 180}, "voice": {"engine": "piper"}}),
        )
        .unwrap();
        let visuals = vec![Chosen::card(), Chosen::asset("lava.jpg", "lava")];
        let v = storyboard(&req, &plan(), &visuals, &[]);
        let spec = reelsmith_spec::parse(&v.to_string()).unwrap();
        assert_eq!(spec.output.dimensions(), (320, 180));
        assert_eq!((spec.voice.engine.as_str(), spec.voice.name.as_str()), ("piper", "en_US-joe-medium"));
        assert_eq!(spec.scenes.len(), 2);
        assert_eq!(spec.scenes[0].title.as_deref(), Some("Volcanoes"));
        assert!(spec.scenes[0].background.is_some() && spec.scenes[0].image.is_none());
        assert_eq!(spec.scenes[1].image.as_deref(), Some("lava.jpg"));
        assert_eq!(spec.scenes[1].narration.as_ref().unwrap().text.as_deref(), Some("Lava flows."));
        assert!(spec.subtitles.enabled);
    }

    #[test]
    fn the_language_picks_the_espeak_voice() {
        let req = PromptRequest::from_json(json!({"text": "Hallo Welt.", "language": "de"})).unwrap();
        let v = storyboard(&req, &plan(), &[], &[]);
        assert_eq!(v["voice"], json!({"engine": "espeak-ng", "name": "de"}));
    }
}
