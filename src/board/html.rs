//! The leaderboard page: one self-contained HTML document (inline style, a little inline
//! script for sorting, SVG plots drawn here), so it loads with no network beyond the validator.

use std::fmt::Write;

use super::svg::{Series, line_plot};
use super::{CompetitionBoard, Leaderboard, Row, StepPoint};
use crate::text::escape_html as escape;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}\
table{border-collapse:collapse;margin:.6em 0;font-size:.88em;max-width:100%}\
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:left;overflow-wrap:anywhere}\
td.status-cell{min-width:14em}\
th{background:#f2f2f2;cursor:pointer}td.num{text-align:right;font-variant-numeric:tabular-nums}\
tr.rejected td,tr.invalid td{color:#a33}.plots{display:flex;flex-wrap:wrap;gap:.6em}\
.status td:first-child{font-weight:bold}code{font-size:.95em}#page-errors{color:#a00}";

/// The page's own script: click a header to sort a table; errors are listed on the page (a
/// test finds them there as well as on the console).
const SCRIPT: &str = "(function(){\
var errors=[];window.addEventListener('error',function(e){errors.push(String(e.message));\
var p=document.getElementById('page-errors');if(p){p.textContent=errors.join('; ');}});\
function key(td){var v=td.getAttribute('data-sort');if(v===null){v=td.textContent;}\
var n=parseFloat(v);return isNaN(n)?v:n;}\
document.querySelectorAll('table.sortable').forEach(function(table){\
table.querySelectorAll('th').forEach(function(th,i){th.addEventListener('click',function(){\
var body=table.tBodies[0];var rows=Array.prototype.slice.call(body.rows);\
var asc=th.getAttribute('data-dir')!=='asc';th.setAttribute('data-dir',asc?'asc':'desc');\
rows.sort(function(a,b){var x=key(a.cells[i]),y=key(b.cells[i]);\
return (x<y?-1:x>y?1:0)*(asc?1:-1);});rows.forEach(function(r){body.appendChild(r);});});});});\
document.documentElement.setAttribute('data-ready','1');})();";

fn number(value: Option<f64>, digits: usize) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        Some(_) | None => "–".into(),
    }
}

/// The page for `board`; `live` adds a refresh every minute and links to the runner's other
/// endpoints.
pub fn render(board: &Leaderboard, live: bool) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    if live {
        out.push_str("<meta http-equiv=\"refresh\" content=\"60\">");
    }
    let _ = write!(
        out,
        "<link rel=\"icon\" href=\"data:,\"><title>Validator leaderboard</title><style>{STYLE}</style></head><body>\
         <h1>Validator leaderboard</h1><p id=\"page-errors\"></p>"
    );
    status(&mut out, board, live);
    for competition in &board.competitions {
        competition_section(&mut out, competition);
    }
    if !board.unassigned.is_empty() {
        out.push_str("<section class=\"unassigned\"><h2>Commitments that name no competition</h2>");
        rows_table(&mut out, &board.unassigned);
        out.push_str("</section>");
    }
    recent_steps(&mut out, board);
    let _ = write!(out, "<script>{SCRIPT}</script></body></html>");
    out
}

fn status(out: &mut String, board: &Leaderboard, live: bool) {
    let v = &board.validator;
    let opt = |value: Option<u64>| value.map_or_else(|| "–".to_owned(), |b| b.to_string());
    out.push_str("<table class=\"status\" id=\"validator-status\"><tbody>");
    let mut line = |name: &str, value: String| {
        let _ = write!(out, "<tr><td>{name}</td><td>{value}</td></tr>");
    };
    line("last journaled block", opt(v.block_journaled));
    if live {
        line("chain head", opt(v.head_block));
        line("block lag", opt(v.block_lag));
    }
    line("steps completed", v.steps_completed.to_string());
    line("step in progress", opt(v.step_open));
    line(
        "last weights included at block",
        opt(v.block_weights_included),
    );
    line(
        "last weight submission",
        v.weights_last.as_ref().map_or_else(
            || "none".to_owned(),
            |w| {
                format!(
                    "{} {} at block {}{}",
                    w.method,
                    w.outcome,
                    w.block,
                    w.detail
                        .as_ref()
                        .map(|d| format!(": {}", escape(d)))
                        .unwrap_or_default()
                )
            },
        ),
    );
    line("journal records", v.records.to_string());
    for warning in &v.warnings {
        line("warning", escape(warning));
    }
    if let Some(head) = &v.journal_head {
        line("journal head", escape(head));
    }
    out.push_str("</tbody></table>");
    if live {
        out.push_str(
            "<p><a href=\"/api/leaderboard\">JSON</a> · <a href=\"/metrics\">metrics</a> · \
             <a href=\"/healthz\">health</a></p>",
        );
    }
}

fn competition_section(out: &mut String, competition: &CompetitionBoard) {
    let id = escape(&competition.id);
    let _ = write!(
        out,
        "<section class=\"competition\" id=\"competition-{id}\" data-competition=\"{id}\">\
         <h2>Competition {id}</h2><p>eval set: {} · pending: {}</p>",
        uid_list(&competition.eval_set),
        uid_list(&competition.pending)
    );
    rows_table(out, &competition.rows);
    let steps = &competition.history;
    let plots = [
        (
            "mean loss",
            "loss",
            (|p: &super::UidPoint| p.loss_mean) as fn(&_) -> _,
        ),
        ("win rate", "win-rate", |p: &super::UidPoint| {
            Some(p.win_rate)
        }),
        ("weight", "weight", |p: &super::UidPoint| Some(p.weight)),
    ];
    out.push_str("<div class=\"plots\">");
    // An empty plot says why: no step yet, or steps whose every value was infinite (every
    // model failed).
    let empty = if steps.is_empty() {
        "no completed steps yet"
    } else {
        "no finite value in the completed steps"
    };
    for (title, class, value) in plots {
        let series = series_of(steps, value);
        out.push_str(&line_plot(
            &format!("{} · {title}", competition.id),
            "step",
            class,
            &series,
            empty,
        ));
    }
    out.push_str("</div></section>");
}

fn uid_list(uids: &[u16]) -> String {
    if uids.is_empty() {
        return "none".into();
    }
    uids.iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Steps drawn per plot at most: a long history is thinned to evenly spaced steps (the latest
/// always kept), so the page stays small whatever the history holds.
const PLOTTED_STEPS_MAX: usize = 300;

/// The steps a plot draws: all of them, or `PLOTTED_STEPS_MAX` evenly spaced ending with the
/// latest.
fn thinned(steps: &[StepPoint]) -> Vec<&StepPoint> {
    if steps.len() <= PLOTTED_STEPS_MAX {
        return steps.iter().collect();
    }
    let stride = steps.len().div_ceil(PLOTTED_STEPS_MAX);
    let last = steps.len() - 1;
    steps
        .iter()
        .enumerate()
        .filter(|(index, _)| (last - index).is_multiple_of(stride))
        .map(|(_, step)| step)
        .collect()
}

/// One series per uid that took part in any of `steps`, ascending by uid.
fn series_of(steps: &[StepPoint], value: fn(&super::UidPoint) -> Option<f64>) -> Vec<Series> {
    let steps = thinned(steps);
    let mut uids: Vec<u16> = steps
        .iter()
        .flat_map(|s| s.uids.iter().map(|u| u.uid))
        .collect();
    uids.sort_unstable();
    uids.dedup();
    uids.into_iter()
        .map(|uid| Series {
            label: format!("uid {uid}"),
            points: steps
                .iter()
                .map(|step| {
                    let point = step.uids.iter().find(|u| u.uid == uid)?;
                    let x = u32::try_from(step.step).map_or(f64::MAX, f64::from);
                    value(point).map(|y| (x, y))
                })
                .collect(),
        })
        .collect()
}

fn rows_table(out: &mut String, rows: &[Row]) {
    out.push_str(
        "<table class=\"leaderboard sortable\"><thead><tr><th>uid</th><th>hotkey</th>\
         <th>model</th><th>commit block</th><th>status</th><th>mean loss</th>\
         <th>win rate</th><th>weight</th></tr></thead><tbody>",
    );
    for row in rows {
        let class = match row.status {
            super::RowStatus::Rejected => "rejected",
            super::RowStatus::Invalid => "invalid",
            _ => "",
        };
        let status = match &row.reason {
            Some(reason) => format!("{}: {}", row.status.as_str(), escape(reason)),
            None => row.status.as_str().to_owned(),
        };
        let _ = write!(
            out,
            "<tr class=\"{class}\" data-uid=\"{uid}\"><td class=\"num\">{uid}</td>\
             <td><code>{hotkey}</code></td><td><code>{model}</code></td>\
             <td class=\"num\">{block}</td><td class=\"status-cell\">{status}</td>\
             <td class=\"num loss\">{loss}</td><td class=\"num win-rate\">{win}</td>\
             <td class=\"num weight\" data-sort=\"{weight_exact}\">{weight}</td></tr>",
            uid = row.uid,
            hotkey = escape(&row.hotkey),
            model = escape(row.model.as_deref().unwrap_or("–")),
            block = row
                .block_commit
                .map_or_else(|| "–".to_owned(), |b| b.to_string()),
            loss = number(row.loss_mean, 4),
            win = number(row.win_rate, 4),
            weight = number(Some(row.weight), 4),
            weight_exact = row.weight,
        );
    }
    out.push_str("</tbody></table>");
}

fn recent_steps(out: &mut String, board: &Leaderboard) {
    out.push_str(
        "<section class=\"steps\"><h2>Recent steps</h2><table class=\"recent sortable\">\
         <thead><tr><th>step</th><th>competition</th><th>block</th><th>ended</th>\
         <th>uids</th><th>reason</th></tr></thead><tbody>",
    );
    for step in &board.steps_recent {
        let _ = write!(
            out,
            "<tr><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td>\
             <td class=\"num\">{}</td><td>{}</td></tr>",
            step.step,
            escape(&step.competition),
            step.block,
            step.end.as_str(),
            step.uids,
            escape(step.reason.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</tbody></table></section>");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Postmortem (a1e8d6f): a plot drew every step of the history, so a year-long journal
    /// made a page of megabytes; it is thinned to at most `PLOTTED_STEPS_MAX` points, keeping
    /// the latest step.
    #[test]
    fn a_long_history_is_thinned_keeping_the_latest_step() {
        let steps: Vec<StepPoint> = (0..1_000)
            .map(|step| StepPoint {
                step,
                block: step,
                uids: Vec::new(),
            })
            .collect();
        let drawn = thinned(&steps);
        assert!(drawn.len() <= PLOTTED_STEPS_MAX && drawn.len() > PLOTTED_STEPS_MAX / 2);
        assert_eq!(drawn.last().map(|s| s.step), Some(999));
        assert_eq!(thinned(&steps[..10]).len(), 10);
    }
}
