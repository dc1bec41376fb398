//! The dashboard's HTML, rendered on the server: the page, its panel (which
//! the page fetches again every two seconds) and the login form. No script
//! builds markup; the one script only swaps the panel.

use std::fmt::Write;

use super::history::{Point, WINDOW_MS};
use super::overview::Overview;

/// Escapes text for HTML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `HH:MM:SS` UTC of a time in ms since the epoch.
pub fn clock(ms: u64) -> String {
    let s = (ms / 1000) % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn percent(share: Option<f64>) -> String {
    share.map_or_else(|| "–".to_owned(), |s| format!("{:.1} %", s * 100.0))
}

fn head(title: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><link rel=\"stylesheet\" href=\"/dashboard/style.css\">",
        esc(title)
    )
}

/// The login form; `error` says why the last attempt failed.
pub fn login(error: Option<&str>) -> String {
    let mut html = head("cellnet — sign in");
    html.push_str("</head><body class=\"login\"><main><h1>cellnet</h1><p>Operator dashboard</p>");
    if let Some(e) = error {
        let _ = write!(html, "<p class=\"error\" role=\"alert\">{}</p>", esc(e));
    }
    html.push_str(
        "<form method=\"post\" action=\"/dashboard/login\">\
         <label for=\"token\">Operator token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
         <button type=\"submit\">Sign in</button></form></main></body></html>\n",
    );
    html
}

/// The whole page, with the panel as of now.
pub fn page(overview: &Overview) -> String {
    let mut html = head("cellnet — operator dashboard");
    html.push_str(
        "<script src=\"/dashboard/app.js\" defer></script></head><body>\
         <header><h1>cellnet</h1><span class=\"subtitle\">operator dashboard</span>\
         <form method=\"post\" action=\"/dashboard/logout\"><button type=\"submit\">Sign out</button></form>\
         </header><main id=\"panel\">",
    );
    html.push_str(&panel(overview));
    html.push_str("</main></body></html>\n");
    html
}

fn stat(html: &mut String, id: &str, label: &str, value: &str) {
    let _ = write!(
        html,
        "<div class=\"stat\" id=\"{id}\"><span class=\"label\">{}</span><span class=\"value\">{}</span></div>",
        esc(label),
        esc(value)
    );
}

/// The panel: everything the page shows, refreshed as a whole.
pub fn panel(o: &Overview) -> String {
    let t = &o.traffic;
    let mut html = String::new();
    let _ = write!(
        html,
        "<p class=\"updated\" id=\"updated\" data-at-ms=\"{}\">Updated {} UTC</p>",
        o.at_ms,
        clock(o.at_ms)
    );
    html.push_str("<section class=\"stats\">");
    stat(
        &mut html,
        "rps",
        "Requests / s (1 min)",
        &format!("{:.2}", t.requests_per_second),
    );
    stat(
        &mut html,
        "p99",
        "p99 latency (1 min)",
        &t.p99_seconds
            .map_or_else(|| "–".to_owned(), |s| format!("{:.0} ms", s * 1000.0)),
    );
    stat(
        &mut html,
        "exact-hits",
        "Exact cache hits (15 min)",
        &percent(t.exact_hit_rate),
    );
    stat(
        &mut html,
        "semantic-hits",
        "Semantic cache hits (15 min)",
        &percent(t.semantic_hit_rate),
    );
    stat(
        &mut html,
        "groundedness",
        "Mean groundedness (15 min)",
        &t.mean_groundedness
            .map_or_else(|| "–".to_owned(), |g| format!("{g:.2}")),
    );
    stat(
        &mut html,
        "low-groundedness",
        "Low-groundedness answers (15 min)",
        &percent(t.low_groundedness_share),
    );
    html.push_str("</section>");

    html.push_str("<section><h2>Requests and cache hits, last 15 minutes</h2>");
    html.push_str(&chart(&t.series, o.at_ms));
    html.push_str("</section>");

    html.push_str(
        "<section><h2>Cells</h2><table id=\"cells\"><thead><tr><th>Cell</th><th>Region</th>\
         <th>Template</th><th>Lifecycle</th><th>Alive</th><th>Metrics</th><th>Tenants</th>\
         <th>Requests / s</th></tr></thead><tbody>",
    );
    for c in &o.cells {
        let dash = |v: &Option<String>| esc(v.as_deref().unwrap_or("–"));
        let _ = write!(
            html,
            "<tr data-cell=\"{id}\" class=\"{row}\"><td>{id}</td><td>{}</td><td>{}</td>\
             <td class=\"lifecycle\">{}</td><td class=\"alive\">{}</td>\
             <td class=\"metrics\" title=\"{}\">{}</td><td class=\"tenants\">{}</td><td>{:.2}</td></tr>",
            dash(&c.region),
            dash(&c.template),
            c.lifecycle.unwrap_or("–"),
            if c.alive { "yes" } else { "no" },
            dash(&c.metrics_error),
            c.metrics,
            c.tenants,
            c.requests_per_second,
            id = esc(&c.id),
            row = if c.alive && c.metrics == "ok" {
                "up"
            } else {
                "down"
            },
        );
    }
    html.push_str("</tbody></table></section>");

    let _ = write!(
        html,
        "<section><h2>Placement</h2><p id=\"placement\">{} placed, {} in progress.</p>",
        count(o.placed_tenants, "tenant", "tenants"),
        count(o.moves.len(), "move", "moves")
    );
    if !o.moves.is_empty() {
        html.push_str(
            "<table id=\"moves\"><thead><tr><th>Tenant</th><th>From</th><th>To</th><th>Step</th>\
             <th>Points copied</th><th>Since</th></tr></thead><tbody>",
        );
        for m in &o.moves {
            let _ = write!(
                html,
                "<tr data-tenant=\"{t}\"><td>{t}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{} UTC</td></tr>",
                esc(&m.from.join(", ")),
                esc(&m.to.join(", ")),
                m.step,
                m.copied_points,
                m.total_points,
                clock(m.started_at_ms),
                t = esc(&m.tenant),
            );
        }
        html.push_str("</tbody></table>");
    }
    html.push_str("</section>");

    html.push_str(
        "<section><h2>Provider-regions</h2><table id=\"providers\"><thead><tr><th>Provider-region</th>\
         <th>State</th><th>Drained</th><th>Cells</th><th>Error rate</th><th>Throttled</th><th>Latency</th>\
         <th>Samples</th></tr></thead><tbody>",
    );
    for p in &o.providers {
        let _ = write!(
            html,
            "<tr data-provider=\"{id}\" class=\"{class}\"><td>{id}</td><td class=\"state\">{state}</td>\
             <td class=\"drained\">{}</td><td class=\"cells\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if p.drained { "yes" } else { "no" },
            p.configured_cells,
            percent(p.error_rate),
            percent(p.throttle_rate),
            p.latency_ms
                .map_or_else(|| "–".to_owned(), |l| format!("{l:.0} ms")),
            p.samples.map_or_else(|| "–".to_owned(), |s| s.to_string()),
            id = esc(&p.id),
            state = p.state,
            class = p.state.replace(' ', "-"),
        );
    }
    html.push_str("</tbody></table></section>");

    let _ = write!(
        html,
        "<section><h2>Cost per tenant today</h2><p class=\"note\">Since {} UTC, at the cells' configured prices.</p>\
         <table id=\"cost\"><thead><tr><th>Tenant</th><th>USD</th></tr></thead><tbody>",
        clock(t.cost_since_ms)
    );
    let mut cost: Vec<(&String, &f64)> = t.cost_today.iter().collect();
    cost.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
    for (tenant, usd) in cost {
        let _ = write!(
            html,
            "<tr data-tenant=\"{t}\"><td>{t}</td><td>{usd:.6}</td></tr>",
            t = esc(tenant)
        );
    }
    html.push_str("</tbody></table></section>");
    html
}

/// An SVG line chart of requests and cache hits per second, now on the
/// right, fifteen minutes ago on the left.
pub fn chart(series: &[Point], now_ms: u64) -> String {
    const W: f64 = 720.0;
    const H: f64 = 160.0;
    const PAD: f64 = 28.0;
    let top = series
        .iter()
        .map(|p| p.requests_per_second.max(p.cache_hits_per_second))
        .fold(0.0_f64, f64::max)
        .max(1.0)
        * 1.1;
    let start = now_ms.saturating_sub(WINDOW_MS);
    let x = |at: u64| PAD + (at.saturating_sub(start) as f64 / WINDOW_MS as f64) * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD - (v / top) * (H - 2.0 * PAD);
    let line = |value: fn(&Point) -> f64| -> String {
        series
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.at_ms), y(value(p))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg id=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"Requests and cache hits per second over the last 15 minutes\" data-points=\"{}\">",
        series.len()
    );
    let _ = write!(
        svg,
        "<line class=\"axis\" x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\"/>\
         <line class=\"axis\" x1=\"{PAD}\" y1=\"{PAD}\" x2=\"{PAD}\" y2=\"{b}\"/>\
         <text x=\"{PAD}\" y=\"{tb}\">15 min ago</text><text x=\"{r}\" y=\"{tb}\" text-anchor=\"end\">now</text>\
         <text x=\"{l}\" y=\"{PAD}\" text-anchor=\"end\">{top:.1}</text><text x=\"{l}\" y=\"{b}\" text-anchor=\"end\">0</text>",
        b = H - PAD,
        r = W - PAD,
        tb = H - 8.0,
        l = PAD - 4.0,
    );
    let _ = write!(
        svg,
        "<polyline class=\"requests\" points=\"{}\"/><polyline class=\"hits\" points=\"{}\"/>",
        line(|p| p.requests_per_second),
        line(|p| p.cache_hits_per_second)
    );
    let _ = write!(
        svg,
        "<text class=\"legend requests\" x=\"{a}\" y=\"16\">requests / s</text>\
         <text class=\"legend hits\" x=\"{b}\" y=\"16\">cache hits / s</text></svg>",
        a = W - 260.0,
        b = W - 130.0
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<b a=\"x\">&'</b>"),
            "&lt;b a=&quot;x&quot;&gt;&amp;&#39;&lt;/b&gt;"
        );
    }

    #[test]
    fn clock_is_utc() {
        assert_eq!(
            clock(((13 * 60 + 5) * 60 + 9) * 1000 + 86_400_000),
            "13:05:09"
        );
    }

    #[test]
    fn the_chart_places_now_on_the_right() {
        let now = 10 * WINDOW_MS;
        let svg = chart(
            &[
                Point {
                    at_ms: now - WINDOW_MS,
                    requests_per_second: 0.0,
                    cache_hits_per_second: 0.0,
                },
                Point {
                    at_ms: now,
                    requests_per_second: 10.0,
                    cache_hits_per_second: 5.0,
                },
            ],
            now,
        );
        // Now at the right, 10 of a top of 11; fifteen minutes ago at zero.
        assert!(svg.contains("points=\"28.0,132.0 692.0,37.5\""), "{svg}");
        assert!(svg.contains("data-points=\"2\""));
    }
}
