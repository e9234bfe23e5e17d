//! Chat prompts from a model's Jinja chat template (`tokenizer.chat_template`), rendered as
//! Hugging Face's `apply_chat_template` renders them: `trim_blocks` and `lstrip_blocks` on,
//! Python string methods (`.strip()`, `.startswith()`, ...), and the helpers templates call:
//! `raise_exception`, `strftime_now` and a `tojson` that writes what Python's `json.dumps` writes.

mod pyjson;
mod strftime;

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, Error, ErrorKind, Value};

use crate::tokenizer::Tokenizer;

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// Why a chat prompt could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChatTemplateError {
    /// The model has no `tokenizer.chat_template`.
    #[error("the model has no chat template (`tokenizer.chat_template`)")]
    Missing,
    /// The template is not valid Jinja (for MiniJinja).
    #[error("the chat template does not compile")]
    Syntax(#[source] Error),
    /// Rendering failed, for example through the template's own `raise_exception`.
    #[error("rendering the chat template failed")]
    Render(#[source] Error),
    /// The tools given are not JSON.
    #[error("the tools are not valid JSON")]
    Tools(#[source] serde_json::Error),
}

const NAME: &str = "tokenizer.chat_template";

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Compiles `source`; `bos_token` and `eos_token` are the texts the template sees under those
    /// names.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, ChatTemplateError> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(ChatTemplateError::Syntax)?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime::strftime_now);
        env.add_filter("tojson", pyjson::tojson);
        env.add_template_owned(NAME, source.to_owned())
            .map_err(ChatTemplateError::Syntax)?;
        Ok(Self {
            env,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    /// The template of a tokenizer's model, with its BOS and EOS texts.
    pub fn for_tokenizer(tokenizer: &Tokenizer) -> Result<Self, ChatTemplateError> {
        let source = tokenizer
            .chat_template()
            .ok_or(ChatTemplateError::Missing)?;
        let text = |id: Option<u32>| {
            id.map(|id| {
                String::from_utf8_lossy(&tokenizer.token_to_piece_with(id, true)).into_owned()
            })
            .unwrap_or_default()
        };
        Self::new(source, &text(tokenizer.bos()), &text(tokenizer.eos()))
    }

    /// The prompt for `messages`; with `add_generation_prompt`, ending with the opening of an
    /// assistant turn.
    pub fn apply(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        self.render(messages, None, add_generation_prompt)
    }

    /// [`apply`](Self::apply) with tool definitions: `tools_json` is a JSON array of tool
    /// objects, whose keys keep their order (as in Python).
    pub fn apply_with_tools(
        &self,
        messages: &[ChatMessage],
        tools_json: &str,
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        let tools: Value = serde_json::from_str(tools_json).map_err(ChatTemplateError::Tools)?;
        self.render(messages, Some(tools), add_generation_prompt)
    }

    fn render(
        &self,
        messages: &[ChatMessage],
        tools: Option<Value>,
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| {
                Value::from_pairs([
                    ("role", Value::from(m.role.as_str())),
                    ("content", Value::from(m.content.as_str())),
                ])
            })
            .collect();
        let mut ctx = vec![
            ("messages", Value::from(messages)),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("bos_token", Value::from(self.bos_token.as_str())),
            ("eos_token", Value::from(self.eos_token.as_str())),
        ];
        if let Some(tools) = tools {
            ctx.push(("tools", tools));
        }
        self.env
            .get_template(NAME)
            .and_then(|t| t.render(Value::from_pairs(ctx)))
            .map_err(ChatTemplateError::Render)
    }
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_python_helpers() {
        let source = "{% for m in messages %}{{ m.role | upper }}:{{ m.content.strip() }}\n\
                      {% endfor %}{% if add_generation_prompt %}{{ bos_token }}{% endif %}";
        let t = ChatTemplate::new(source, "<s>", "</s>").unwrap();
        let out = t
            .apply(
                &[ChatMessage::user("  hi  "), ChatMessage::assistant("yo")],
                true,
            )
            .unwrap();
        assert_eq!(out, "USER:hi\nASSISTANT:yo\n<s>");
    }

    #[test]
    fn blocks_trim_like_hugging_face() {
        let source = "{% if true %}\n    a\n{% endif %}\nb";
        let t = ChatTemplate::new(source, "", "").unwrap();
        assert_eq!(t.apply(&[], false).unwrap(), "    a\nb");
    }

    #[test]
    fn raise_exception_fails_the_render() {
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}", "", "").unwrap();
        let err = t.apply(&[], false).unwrap_err();
        assert!(matches!(err, ChatTemplateError::Render(_)));
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert!(source.is_some_and(|s| s.contains("no system role")));
    }

    #[test]
    fn bad_templates_and_tools_are_errors() {
        assert!(matches!(
            ChatTemplate::new("{% if %}", "", ""),
            Err(ChatTemplateError::Syntax(_))
        ));
        let t = ChatTemplate::new("{{ tools | tojson }}", "", "").unwrap();
        assert_eq!(
            t.apply_with_tools(&[], r#"[{"b": 1, "a": [true, null]}]"#, false)
                .unwrap(),
            r#"[{"b": 1, "a": [true, null]}]"#
        );
        assert!(matches!(
            t.apply_with_tools(&[], "[", false),
            Err(ChatTemplateError::Tools(_))
        ));
    }
}
