//! Chat templates: Jinja as Hugging Face renders it (`trim_blocks`, `lstrip_blocks`, loop
//! controls, Python string methods, `raise_exception`, `strftime_now`, a Python-style `tojson`),
//! run by minijinja with a fuel limit. A template may come from a miner, so the renderer can
//! also run in a child process with a memory limit and a timeout ([`Isolation`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, context};
use serde::{Deserialize, Serialize};

use super::limits::ChildLimits;

use super::EvalError;

/// Instructions one render may execute before it is stopped (a loop that never ends, or a
/// deliberately huge one, runs out long before it costs real time).
pub const FUEL: u64 = 20_000_000;
/// The longest rendered conversation accepted.
pub const RENDERED_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The most a batch's conversations may render to together.
pub const RENDERED_BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Instructions a whole batch may execute (each conversation also has [`FUEL`]): a template
/// that burns almost all of its fuel on every conversation is stopped within seconds, not
/// after one fuel tank per conversation.
pub const FUEL_BATCH: u64 = 4 * FUEL;
/// How long a batch may take to render, checked between conversations.
pub const RENDER_BATCH_TIME_MAX: Duration = Duration::from_secs(15);

/// Rendered output that refuses to grow past its limit, so a template that writes too much
/// is stopped as it writes, not after it built the whole string.
struct BoundedOutput {
    bytes: Vec<u8>,
    limit: usize,
    over: bool,
}

impl Write for BoundedOutput {
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(chunk.len()) > self.limit {
            self.over = true;
            return Err(std::io::Error::other("over the output limit"));
        }
        self.bytes.extend_from_slice(chunk);
        Ok(chunk.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `user`, `assistant` or `system`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// A conversation to render.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// The messages, in order.
    pub messages: Vec<Message>,
    /// Append the assistant's header (the prompt that asks for a reply).
    pub add_generation_prompt: bool,
}

/// A calendar date, for `strftime_now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CivilDate {
    /// Year.
    pub year: i64,
    /// Month, 1..=12.
    pub month: u32,
    /// Day of the month, 1..=31.
    pub day: u32,
}

impl CivilDate {
    /// The date of a Unix time (UTC), by the days-from-civil algorithm.
    pub fn from_unix_seconds(seconds: i64) -> Self {
        let days = seconds.div_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        Self {
            year,
            month: u32::try_from(month).unwrap_or(1),
            day: u32::try_from(day).unwrap_or(1),
        }
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split('-').collect();
        let [year, month, day] = parts.as_slice() else {
            return Err(format!("{text:?} is not YYYY-MM-DD"));
        };
        let date = CivilDate {
            year: year.parse().map_err(|_| format!("bad year in {text:?}"))?,
            month: month
                .parse()
                .map_err(|_| format!("bad month in {text:?}"))?,
            day: day.parse().map_err(|_| format!("bad day in {text:?}"))?,
        };
        if !(1..=12).contains(&date.month) || !(1..=31).contains(&date.day) {
            return Err(format!("{text:?} is not a date"));
        }
        Ok(date)
    }

    /// Today, in UTC.
    pub fn today() -> Self {
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
        Self::from_unix_seconds(seconds)
    }

    /// Python's `strftime` for the date directives templates use (%d %m %Y %y %b %B %a %A %j
    /// %e and %%); time directives print midnight.
    pub fn strftime(&self, format: &str) -> String {
        const MONTHS: [&str; 12] = [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ];
        const DAYS: [&str; 7] = [
            "Monday",
            "Tuesday",
            "Wednesday",
            "Thursday",
            "Friday",
            "Saturday",
            "Sunday",
        ];
        let month_name = MONTHS
            .get(usize::try_from(self.month.saturating_sub(1)).unwrap_or(0))
            .copied()
            .unwrap_or("January");
        // Day of week from the day count (1970-01-01 was a Thursday).
        let days = self.days_since_epoch();
        let weekday = DAYS
            .get(usize::try_from((days + 3).rem_euclid(7)).unwrap_or(0))
            .copied()
            .unwrap_or("Monday");
        let day_of_year = days
            - Self {
                year: self.year,
                month: 1,
                day: 1,
            }
            .days_since_epoch()
            + 1;
        let mut out = String::new();
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let _ = match chars.next() {
                Some('d') => write!(out, "{:02}", self.day),
                Some('e') => write!(out, "{:>2}", self.day),
                Some('m') => write!(out, "{:02}", self.month),
                Some('Y') => write!(out, "{}", self.year),
                Some('y') => write!(out, "{:02}", self.year.rem_euclid(100)),
                Some('b') => write!(out, "{}", month_name.get(..3).unwrap_or(month_name)),
                Some('B') => write!(out, "{month_name}"),
                Some('a') => write!(out, "{}", weekday.get(..3).unwrap_or(weekday)),
                Some('A') => write!(out, "{weekday}"),
                Some('j') => write!(out, "{day_of_year:03}"),
                Some('H' | 'M' | 'S' | 'I') => write!(out, "00"),
                Some('p') => write!(out, "AM"),
                Some('%') => write!(out, "%"),
                Some(other) => write!(out, "%{other}"),
                None => write!(out, "%"),
            };
        }
        out
    }

    fn days_since_epoch(&self) -> i64 {
        let (year, month, day) = (self.year, i64::from(self.month), i64::from(self.day));
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (month + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }
}

/// A chat template and the values Hugging Face passes to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatTemplate {
    /// The Jinja source.
    pub source: String,
    /// `bos_token`, `eos_token`, ... as strings.
    pub special_tokens: BTreeMap<String, String>,
}

fn python_json(
    value: &Value,
    indent: Option<usize>,
    depth: usize,
    out: &mut String,
) -> Result<(), Error> {
    if depth > 64 {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "tojson: nesting too deep",
        ));
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(width) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(width * level));
        }
    };
    let separator = if indent.is_some() { "," } else { ", " };
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Ok(integer) = i64::try_from(value.clone()) {
                let _ = write!(out, "{integer}");
            } else if let Ok(float) = f64::try_from(value.clone()) {
                let _ = write!(out, "{float:?}");
            } else {
                let _ = write!(out, "{value}");
            }
        }
        ValueKind::String => {
            out.push_str(&serde_json::to_string(value.as_str().unwrap_or("")).unwrap_or_default());
        }
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            for (index, item) in value.try_iter()?.enumerate() {
                if index > 0 {
                    out.push_str(separator);
                }
                newline(out, depth + 1);
                python_json(&item, indent, depth + 1, out)?;
            }
            if value.len().unwrap_or(1) > 0 {
                newline(out, depth);
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (index, key) in value.try_iter()?.enumerate() {
                if index > 0 {
                    out.push_str(separator);
                }
                newline(out, depth + 1);
                let name = key.as_str().map_or_else(|| key.to_string(), str::to_owned);
                out.push_str(&serde_json::to_string(&name).unwrap_or_default());
                out.push_str(": ");
                python_json(&value.get_item(&key)?, indent, depth + 1, out)?;
            }
            if value.len().unwrap_or(1) > 0 {
                newline(out, depth);
            }
            out.push('}');
        }
        _ => out.push_str(&serde_json::to_string(&value.to_string()).unwrap_or_default()),
    }
    if out.len() > RENDERED_BYTES_MAX {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "tojson output is too large",
        ));
    }
    Ok(())
}

fn environment(date: CivilDate) -> Environment<'static> {
    let mut env = Environment::new();
    // Hugging Face renders with trim_blocks and lstrip_blocks; these options parse always.
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(64);
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |message: String| -> Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, message))
        },
    );
    env.add_function("strftime_now", move |format: String| -> Value {
        Value::from(date.strftime(&format))
    });
    env.add_filter(
        "tojson",
        |value: Value, kwargs: Kwargs| -> Result<Value, Error> {
            let indent: Option<usize> = kwargs.get("indent")?;
            let _: Option<bool> = kwargs.get("ensure_ascii")?;
            let _: Option<bool> = kwargs.get("sort_keys")?;
            kwargs.assert_all_used()?;
            let mut out = String::new();
            python_json(&value, indent.map(|i| i.min(16)), 0, &mut out)?;
            Ok(Value::from_safe_string(out))
        },
    );
    env
}

impl ChatTemplate {
    /// Renders conversations in this process. A template error fails the whole call (N fails
    /// the whole model when its tokenizer raises).
    pub fn render_all(
        &self,
        conversations: &[Conversation],
        date: CivilDate,
    ) -> Result<Vec<String>, EvalError> {
        let env = environment(date);
        let template = env
            .template_from_str(&self.source)
            .map_err(|e| EvalError::Template(format!("the chat template does not parse: {e}")))?;
        let started = std::time::Instant::now();
        let (mut fuel_used, mut bytes_total) = (0u64, 0usize);
        let mut rendered = Vec::with_capacity(conversations.len());
        for (index, conversation) in conversations.iter().enumerate() {
            if started.elapsed() > RENDER_BATCH_TIME_MAX || fuel_used > FUEL_BATCH {
                return Err(EvalError::Template(format!(
                    "the chat template took over {} s or {FUEL_BATCH} instructions for {index} \
                     of {} conversations",
                    RENDER_BATCH_TIME_MAX.as_secs(),
                    conversations.len()
                )));
            }
            let mut values: BTreeMap<String, Value> = self
                .special_tokens
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                .collect();
            values.insert(
                "messages".into(),
                Value::from(minijinja::value::Serde(&conversation.messages)),
            );
            values.insert(
                "add_generation_prompt".into(),
                Value::from(conversation.add_generation_prompt),
            );
            values.insert("tools".into(), Value::from(()));
            values.insert("documents".into(), Value::from(()));
            let limit = RENDERED_BYTES_MAX.min(RENDERED_BATCH_BYTES_MAX - bytes_total);
            let mut output = BoundedOutput {
                bytes: Vec::new(),
                limit,
                over: false,
            };
            let captured =
                template.render_captured_to(context! { ..Value::from(values) }, &mut output);
            if output.over {
                return Err(EvalError::Template(format!(
                    "the chat template rendered over {limit} bytes for conversation {index} (at \
                     most {RENDERED_BYTES_MAX} each, {RENDERED_BATCH_BYTES_MAX} a batch)"
                )));
            }
            let captured = captured
                .map_err(|e| EvalError::Template(format!("the chat template failed: {e}")))?;
            fuel_used = fuel_used
                .saturating_add(captured.state().fuel_levels().map_or(0, |(used, _)| used));
            bytes_total += output.bytes.len();
            rendered.push(String::from_utf8(output.bytes).map_err(|_| {
                EvalError::Template("the chat template rendered bytes that are not UTF-8".into())
            })?);
        }
        Ok(rendered)
    }
}

/// How templates are rendered.
#[derive(Debug, Clone)]
pub enum Isolation {
    /// In this process (trusted templates: the competition's fixed tokenizer, tests).
    InProcess,
    /// In a child process of `program` run with the hidden `__render-chat-template` command,
    /// under an address-space limit and a timeout, so a template that explodes takes down only
    /// the child.
    Child {
        /// The `validator` executable.
        program: PathBuf,
        /// Address-space limit of the child.
        memory_limit_bytes: u64,
        /// Wall-clock limit.
        timeout: Duration,
    },
}

impl Isolation {
    /// A child of the running executable with default limits (1 GiB, 60 s).
    pub fn child_of_current_exe() -> Result<Self, EvalError> {
        let program = std::env::current_exe()
            .map_err(|e| EvalError::Template(format!("cannot find our own executable: {e}")))?;
        Ok(Isolation::Child {
            program,
            memory_limit_bytes: 1 << 30,
            timeout: Duration::from_secs(60),
        })
    }
}

/// The child's input.
#[derive(Debug, Serialize, Deserialize)]
pub struct RenderRequest {
    /// The template and its special tokens.
    pub template: ChatTemplate,
    /// The date `strftime_now` sees.
    pub date: CivilDate,
    /// What to render.
    pub conversations: Vec<Conversation>,
}

/// The child's output.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RenderResponse {
    /// One string per conversation.
    Rendered(Vec<String>),
    /// Why rendering failed.
    Error(String),
    /// The machine stopped the renderer (it could not limit itself): nobody's template is
    /// at fault.
    Machine(String),
}

/// Serves one [`RenderRequest`] from stdin to stdout (the `__render-chat-template [LIMITS]`
/// command), under the limits its command line gives, which it sets on itself first.
pub fn serve_render_request(limits: &[String]) -> std::io::Result<()> {
    let limited = super::limits::from_args(limits).and_then(|limits| {
        limits
            .apply()
            .map_err(|e| format!("the template renderer cannot limit itself: {e}"))
    });
    if let Err(why) = limited {
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer(&mut stdout, &RenderResponse::Machine(why))?;
        return stdout.flush();
    }
    let mut input = String::new();
    std::io::stdin()
        .take(256 * 1024 * 1024)
        .read_to_string(&mut input)?;
    let response = match serde_json::from_str::<RenderRequest>(&input) {
        Ok(request) => match request
            .template
            .render_all(&request.conversations, request.date)
        {
            Ok(rendered) => RenderResponse::Rendered(rendered),
            Err(error) => RenderResponse::Error(error.to_string()),
        },
        Err(error) => RenderResponse::Error(format!("bad render request: {error}")),
    };
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &response)?;
    stdout.flush()
}

/// Renders conversations under `isolation`.
pub fn render(
    template: &ChatTemplate,
    conversations: &[Conversation],
    date: CivilDate,
    isolation: &Isolation,
) -> Result<Vec<String>, EvalError> {
    let (program, memory_limit_bytes, timeout) = match isolation {
        Isolation::InProcess => return template.render_all(conversations, date),
        Isolation::Child {
            program,
            memory_limit_bytes,
            timeout,
        } => (program, *memory_limit_bytes, *timeout),
    };
    let request = serde_json::to_vec(&RenderRequest {
        template: template.clone(),
        date,
        conversations: conversations.to_vec(),
    })
    .map_err(|e| EvalError::Template(format!("encoding the render request: {e}")))?;
    // The child sets its own address-space limit first, never above this process's hard
    // limit; when that is lower than asked, a renderer that dies is the machine's fault.
    let limits = ChildLimits {
        address_space_bytes: Some(memory_limit_bytes),
        cpu_seconds: None,
    };
    let lowered = limits.are_lowered_here();
    let mut child = Command::new(program)
        .arg("__render-chat-template")
        .args(limits.args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| EvalError::Template(format!("cannot start the template renderer: {e}")))?;
    let mut stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(stdin) = stdin.as_mut() {
            let _ = stdin.write_all(&request);
        }
    });
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut output = Vec::new();
        if let Some(stdout) = stdout.as_mut() {
            let _ = stdout
                .take(u64::try_from(RENDERED_BATCH_BYTES_MAX).unwrap_or(u64::MAX) * 2)
                .read_to_end(&mut output);
        }
        output
    });
    let status = match super::wait_or_kill(&mut child, timeout, Duration::from_millis(5)) {
        Ok(Some(status)) => status,
        Ok(None) => {
            return Err(EvalError::Template(format!(
                "the chat template did not finish within {} s",
                timeout.as_secs()
            )));
        }
        Err(e) => {
            return Err(EvalError::Template(format!(
                "waiting for the template renderer: {e}"
            )));
        }
    };
    let _ = writer.join();
    let output = reader.join().unwrap_or_default();
    match serde_json::from_slice::<RenderResponse>(&output) {
        Ok(RenderResponse::Rendered(rendered)) if rendered.len() == conversations.len() => {
            Ok(rendered)
        }
        Ok(RenderResponse::Rendered(_)) => Err(EvalError::Template(
            "the renderer returned the wrong number of conversations".into(),
        )),
        Ok(RenderResponse::Error(why)) => Err(EvalError::Template(why)),
        Ok(RenderResponse::Machine(why)) => Err(EvalError::Limits(why)),
        Err(_) if !status.success() && lowered => Err(EvalError::Limits(format!(
            "the template renderer died under this machine's resource limits, lower than its \
             {} MiB ({}; {status})",
            memory_limit_bytes / (1024 * 1024),
            super::limits::describe_inherited()
        ))),
        Err(_) if !status.success() => Err(EvalError::Template(format!(
            "the chat template exhausted the renderer's {} MiB memory limit or crashed it ({status})",
            memory_limit_bytes / (1024 * 1024)
        ))),
        Err(e) => Err(EvalError::Template(format!(
            "unreadable renderer output: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

    fn template(source: &str) -> ChatTemplate {
        ChatTemplate {
            source: source.into(),
            special_tokens: [("bos_token".to_owned(), "<|begin_of_text|>".to_owned())].into(),
        }
    }

    fn user(content: &str) -> Conversation {
        Conversation {
            messages: vec![Message {
                role: "user".into(),
                content: content.into(),
            }],
            add_generation_prompt: true,
        }
    }

    const DATE: CivilDate = CivilDate {
        year: 2024,
        month: 7,
        day: 26,
    };

    #[test]
    fn llama3_renders_as_transformers() {
        let rendered = template(LLAMA3).render_all(&[user(" hi ")], DATE).unwrap();
        assert_eq!(
            rendered[0],
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn python_methods_and_helpers_work() {
        let source = "{{ messages[0]['content'].strip().upper() }}|{{ strftime_now('%d %b %Y') }}|{{ {'a': [1, 'é']} | tojson }}|{{ messages[0].content.startswith(' x') }}";
        let rendered = template(source).render_all(&[user(" x y ")], DATE).unwrap();
        assert_eq!(rendered[0], "X Y|26 Jul 2024|{\"a\": [1, \"é\"]}|True");
        let raising = template("{{ raise_exception('only user and assistant roles') }}");
        let error = raising
            .render_all(&[user("x")], DATE)
            .unwrap_err()
            .to_string();
        assert!(error.contains("only user and assistant roles"), "{error}");
    }

    #[test]
    fn endless_templates_run_out_of_fuel() {
        let source =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let error = template(source)
            .render_all(&[user("x")], DATE)
            .unwrap_err()
            .to_string();
        assert!(error.contains("fuel"), "{error}");
        let recursive = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
        assert!(template(recursive).render_all(&[user("x")], DATE).is_err());
    }

    #[test]
    fn civil_dates_are_right() {
        assert_eq!(
            CivilDate::from_unix_seconds(0),
            CivilDate {
                year: 1970,
                month: 1,
                day: 1
            }
        );
        let date = CivilDate::from_unix_seconds(1_721_952_000);
        assert_eq!(date, DATE);
        assert_eq!(
            date.strftime("%A %a %j %m/%d/%y %B %%"),
            "Friday Fri 208 07/26/24 July %"
        );
        assert_eq!(
            CivilDate {
                year: 2000,
                month: 3,
                day: 1
            }
            .strftime("%a %j"),
            "Wed 061"
        );
    }
}
