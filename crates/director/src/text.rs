//! The text mode: an article or script becomes a plan without any model. Paragraphs and
//! sentences become scenes sized by speaking rate (a scene ends at a paragraph, or once it holds
//! about five seconds of speech, and never runs past about twelve); each scene's own rarest
//! content words become its search terms. A short first line without a full stop is the title.

use std::collections::HashMap;

use crate::plan::{MAX_NARRATION_CHARS, Plan, PlanMotion, PlanScene, PlanVisual};

/// Words spoken per second at a natural pace (150 a minute).
pub const WORDS_PER_SECOND: f64 = 2.5;
/// A scene holds at least this many words when its paragraph has them (about 5 s)…
const MIN_SCENE_WORDS: usize = 12;
/// …and no more than this many, unless one sentence is longer (about 12 s).
const MAX_SCENE_WORDS: usize = 30;

/// Seconds to speak `text`.
pub fn speaking_seconds(text: &str) -> f64 {
    text.split_whitespace().count() as f64 / WORDS_PER_SECOND
}

/// Abbreviations after which a full stop does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "st", "vs", "etc", "e.g", "i.e", "no", "fig", "approx", "inc", "ltd", "jr", "sr",
];

/// Splits a paragraph into sentences (., ! or ? followed by a space and a capital, a digit or a
/// quote, and not after a known abbreviation or an initial).
pub fn sentences(paragraph: &str) -> Vec<String> {
    let words: Vec<&str> = paragraph.split_whitespace().collect();
    let mut out = vec![];
    let mut current: Vec<&str> = vec![];
    for (i, w) in words.iter().enumerate() {
        current.push(w);
        let ends = w.trim_end_matches(['"', '\'', ')', '”', '’']).ends_with(['.', '!', '?', '…']);
        let next_starts = words.get(i + 1).is_none_or(|n| {
            n.trim_start_matches(['"', '\'', '(', '“', '‘'])
                .chars()
                .next()
                .is_some_and(|c| c.is_uppercase() || c.is_ascii_digit())
        });
        let bare = w.trim_end_matches(['.', '"', '\'', ')']).to_lowercase();
        let abbreviation = ABBREVIATIONS.contains(&bare.as_str()) || (bare.chars().count() == 1 && w.ends_with('.'));
        if ends && next_starts && !abbreviation {
            out.push(current.join(" "));
            current.clear();
        }
    }
    if !current.is_empty() {
        out.push(current.join(" "));
    }
    out
}

const STOPWORDS: &[&str] = &[
    "about",
    "above",
    "after",
    "again",
    "against",
    "also",
    "although",
    "among",
    "another",
    "around",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "came",
    "come",
    "could",
    "does",
    "doing",
    "down",
    "during",
    "each",
    "even",
    "every",
    "from",
    "further",
    "have",
    "having",
    "here",
    "however",
    "into",
    "itself",
    "just",
    "know",
    "known",
    "like",
    "made",
    "make",
    "many",
    "more",
    "most",
    "much",
    "must",
    "never",
    "once",
    "only",
    "other",
    "over",
    "same",
    "seem",
    "should",
    "since",
    "some",
    "still",
    "such",
    "take",
    "than",
    "that",
    "their",
    "theirs",
    "them",
    "then",
    "there",
    "these",
    "they",
    "thing",
    "things",
    "this",
    "those",
    "though",
    "through",
    "today",
    "under",
    "until",
    "upon",
    "used",
    "very",
    "want",
    "well",
    "were",
    "what",
    "when",
    "where",
    "whether",
    "which",
    "while",
    "whose",
    "will",
    "with",
    "within",
    "without",
    "would",
    "year",
    "years",
    "your",
    "yours",
    "first",
    "last",
    "next",
    "often",
    "really",
    "every",
    "called",
    "tonight",
    "yesterday",
    "tomorrow",
    "always",
    "sometimes",
    "make",
    "makes",
    "made",
    "gets",
    "take",
    "takes",
    "took",
    "want",
    "says",
    "said",
    "become",
    "becomes",
    "became",
    "part",
    "parts",
    "people",
    "time",
    "times",
    "world",
    "able",
    "lots",
];

fn content_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '-' && c != '\'')
        .map(|w| w.trim_matches(['-', '\'']).to_lowercase())
        .filter(|w| w.chars().count() >= 4 && w.chars().all(char::is_alphabetic) && !STOPWORDS.contains(&w.as_str()))
        .collect()
}

/// Up to three search terms for each scene: its content words that are frequent in it and rare
/// in the rest of the text (tf-idf), in the order they first appear.
pub fn keywords(scenes: &[String]) -> Vec<Vec<String>> {
    let per_scene: Vec<Vec<String>> = scenes.iter().map(|s| content_words(s)).collect();
    let mut doc_freq: HashMap<&str, usize> = HashMap::new();
    for words in &per_scene {
        let mut seen: Vec<&str> = words.iter().map(String::as_str).collect();
        seen.sort_unstable();
        seen.dedup();
        for w in seen {
            *doc_freq.entry(w).or_default() += 1;
        }
    }
    let n = scenes.len().max(1) as f64;
    per_scene
        .iter()
        .map(|words| {
            let mut scored: Vec<(f64, usize, &str)> = vec![];
            for (pos, w) in words.iter().enumerate() {
                if scored.iter().any(|(_, _, s)| s == w) {
                    continue;
                }
                // Adverbs show nothing a camera could film.
                if w.ends_with("ly") {
                    continue;
                }
                let tf = words.iter().filter(|x| *x == w).count() as f64;
                let idf = (n / doc_freq[w.as_str()] as f64).ln() + 1.0;
                // Longer words tend to be the specific ones; verb forms less so than nouns.
                let length = 1.0 + 0.1 * w.chars().count() as f64;
                let verb = if w.ends_with("ing") || w.ends_with("ed") { 0.5 } else { 1.0 };
                scored.push((tf * idf * length * verb, pos, w));
            }
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut top: Vec<(usize, &str)> = scored.into_iter().take(3).map(|(_, p, w)| (p, w)).collect();
            top.sort();
            top.into_iter().map(|(_, w)| w.to_string()).collect()
        })
        .collect()
}

/// Groups a paragraph's sentences into scenes of a comfortable length.
fn group(sentences: Vec<String>) -> Vec<String> {
    let mut scenes = vec![];
    let mut current: Vec<String> = vec![];
    let count = |v: &[String]| v.iter().map(|s| s.split_whitespace().count()).sum::<usize>();
    for s in sentences {
        let words = s.split_whitespace().count();
        let chars = current.iter().map(|c| c.chars().count() + 1).sum::<usize>() + s.chars().count();
        if !current.is_empty()
            && (count(&current) >= MIN_SCENE_WORDS
                || count(&current) + words > MAX_SCENE_WORDS
                || chars > MAX_NARRATION_CHARS)
        {
            scenes.push(current.join(" "));
            current.clear();
        }
        current.push(s);
    }
    if !current.is_empty() {
        // A short tail joins the scene before it when they fit together.
        match scenes.last_mut() {
            Some(last)
                if count(&current) < MIN_SCENE_WORDS / 2
                    && last.split_whitespace().count() + count(&current) <= MAX_SCENE_WORDS
                    && last.chars().count() + current.join(" ").chars().count() < MAX_NARRATION_CHARS =>
            {
                last.push(' ');
                last.push_str(&current.join(" "));
            }
            _ => scenes.push(current.join(" ")),
        }
    }
    scenes
}

/// A sentence longer than a scene may speak, cut at commas or, failing that, between words.
fn split_long(sentence: String) -> Vec<String> {
    if sentence.chars().count() <= MAX_NARRATION_CHARS {
        return vec![sentence];
    }
    let mut out = vec![];
    let mut current = String::new();
    for word in sentence.split_whitespace() {
        if current.chars().count() + word.chars().count() + 1 > MAX_NARRATION_CHARS
            || (current.chars().count() > MAX_NARRATION_CHARS / 2 && current.ends_with([',', ';', ':']))
        {
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The plan for narrating `text` as written.
pub fn text_plan(text: &str) -> Plan {
    let normalized = text.replace("\r\n", "\n");
    let mut paragraphs: Vec<String> = normalized
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| p.chars().any(char::is_alphanumeric))
        .collect();
    // A heading: a short first line with no sentence end, alone in its paragraph or on its line.
    let first_line = normalized.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_string();
    let is_heading = |l: &str| {
        let n = l.split_whitespace().count();
        (1..=12).contains(&n) && !l.ends_with(['.', '!', '?', ',', ';', ':'])
    };
    let mut title = None;
    if is_heading(&first_line)
        && (paragraphs.len() > 1 || normalized.lines().filter(|l| !l.trim().is_empty()).count() > 1)
    {
        title = Some(first_line.trim_start_matches('#').trim().to_string());
        if let Some(p) = paragraphs.first_mut() {
            *p = p[first_line.len().min(p.len())..].trim().to_string();
            if p.is_empty() {
                paragraphs.remove(0);
            }
        }
    }
    let mut narrations: Vec<String> = vec![];
    for p in &paragraphs {
        narrations.extend(group(sentences(p).into_iter().flat_map(split_long).collect()));
    }
    let terms = keywords(&narrations);
    let video_title = title.clone().unwrap_or_else(|| {
        let words: Vec<&str> = narrations.first().map_or(vec![], |n| n.split_whitespace().take(6).collect());
        words.join(" ").trim_end_matches(['.', ',', ';', ':', '!', '?']).to_string()
    });
    let motions = [PlanMotion::ZoomIn, PlanMotion::PanRight, PlanMotion::ZoomOut, PlanMotion::PanLeft];
    let mut scenes: Vec<PlanScene> = narrations
        .into_iter()
        .zip(terms)
        .enumerate()
        .map(|(i, (narration, search_terms))| PlanScene {
            visual: PlanVisual { image_prompt: narration.clone(), search_terms },
            narration,
            title: None,
            motion: motions[i % motions.len()],
        })
        .collect();
    // The heading is spoken and shown on the first scene.
    if let Some(t) = title {
        let search_terms = scenes.first().map_or(vec![], |s| s.visual.search_terms.clone());
        scenes.insert(
            0,
            PlanScene {
                narration: t.clone(),
                title: Some(t.clone()),
                visual: PlanVisual { search_terms, image_prompt: t },
                motion: PlanMotion::Still,
            },
        );
    } else if let Some(first) = scenes.first_mut() {
        first.title = Some(video_title.clone());
    }
    Plan { title: video_title, scenes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_end_at_full_stops_not_at_abbreviations() {
        let s =
            sentences("Dr. Smith met Mr. Jones at 5 p.m. in St. Louis. They talked! Was it fun? Yes. 3 people came.");
        assert_eq!(
            s,
            [
                "Dr. Smith met Mr. Jones at 5 p.m. in St. Louis.",
                "They talked!",
                "Was it fun?",
                "Yes.",
                "3 people came."
            ]
        );
    }

    #[test]
    fn an_article_becomes_scenes_sized_by_speech() {
        let article = "How Volcanoes Work\n\n\
            Deep under the ground, rock melts into magma. The magma rises because it is lighter than the rock around it. \
            When the pressure grows too high, the volcano erupts.\n\n\
            Lava flows down the slopes and cools into new rock. Ash clouds can rise many kilometres into the sky. \
            Volcanic soil is rich, so farmers often live nearby.";
        let plan = text_plan(article);
        assert_eq!(plan.title, "How Volcanoes Work");
        assert_eq!(plan.scenes[0].narration, "How Volcanoes Work");
        assert_eq!(plan.scenes[0].title.as_deref(), Some("How Volcanoes Work"));
        // Every word of the article is narrated once, in order.
        let spoken: Vec<&str> = plan.scenes[1..].iter().map(|s| s.narration.as_str()).collect();
        let all = spoken.join(" ");
        assert_eq!(all.split_whitespace().count(), article.split_whitespace().count() - 3);
        assert!(all.starts_with("Deep under the ground") && all.ends_with("live nearby."));
        for s in &plan.scenes[1..] {
            let words = s.narration.split_whitespace().count();
            assert!((MIN_SCENE_WORDS / 2..=MAX_SCENE_WORDS).contains(&words), "{words}: {}", s.narration);
            assert!(!s.visual.search_terms.is_empty() && s.visual.search_terms.len() <= 3);
        }
        // A paragraph never shares a scene with the next.
        assert!(spoken.iter().all(|s| !(s.contains("erupts") && s.contains("Lava"))), "{spoken:?}");
        let terms: Vec<String> = plan.scenes.iter().flat_map(|s| s.visual.search_terms.clone()).collect();
        assert!(terms.iter().any(|t| t == "magma"), "{terms:?}");
        assert!(terms.iter().all(|t| !STOPWORDS.contains(&t.as_str()) && t.len() >= 4), "{terms:?}");
        assert!(crate::plan::check_plan(&plan).is_empty());
    }

    #[test]
    fn a_sentence_too_long_for_one_scene_is_cut() {
        let long = format!("{}.", vec!["word"; 400].join(" "));
        let plan = text_plan(&long);
        assert!(plan.scenes.len() >= 4);
        assert!(plan.scenes.iter().all(|s| s.narration.chars().count() <= MAX_NARRATION_CHARS));
        assert!(crate::plan::check_plan(&plan).is_empty(), "{:?}", crate::plan::check_plan(&plan));
    }

    #[test]
    fn text_without_a_heading_takes_its_first_words_as_title() {
        let plan = text_plan("Coffee grows on shrubs in the tropics. The beans are roasted before they are ground.");
        assert_eq!(plan.title, "Coffee grows on shrubs in the");
        assert_eq!(plan.scenes.len(), 1);
        assert_eq!(plan.scenes[0].title.as_deref(), Some("Coffee grows on shrubs in the"));
    }
}
