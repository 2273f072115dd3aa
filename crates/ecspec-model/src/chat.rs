//! Chat prompt formatting for instruct models.
//!
//! The GGUF's `tokenizer.chat_template` is a Jinja program; rather than run Jinja, ECSpec
//! recognises the ChatML layout that SmolLM2-Instruct and Qwen2.5-Instruct both use and takes
//! the template's default system prompt from it, reproducing its output for plain user/
//! assistant conversations.

use crate::error::{ModelError, Result};
use crate::tokenizer::GgufTokenizer;

/// A role in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// System instructions.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

/// A recognised chat template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTemplate {
    /// `<|im_start|>{role}\n{content}<|im_end|>\n`, with the system prompt the template inserts
    /// when the conversation has none.
    ChatMl {
        /// Default system prompt (None: the template adds none).
        default_system: Option<String>,
    },
}

impl ChatTemplate {
    /// Recognises a template from `tokenizer.chat_template`.
    ///
    /// # Errors
    /// [`ModelError::Tokenizer`] when the template is not ChatML.
    pub fn from_jinja(template: &str) -> Result<Self> {
        if !template.contains("<|im_start|>") {
            return Err(ModelError::Tokenizer(
                "unsupported chat template (only ChatML `<|im_start|>` templates are recognised)"
                    .into(),
            ));
        }
        Ok(Self::ChatMl {
            default_system: default_system_prompt(template),
        })
    }

    /// The prompt for `messages` as template markup and message content, in order, ending
    /// with the assistant header when `add_generation_prompt` (so the model answers next).
    /// Only [`ChatPart::Template`] pieces may contain control tokens; see [`encode_chat`].
    pub fn render_parts(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Vec<ChatPart> {
        let ChatTemplate::ChatMl { default_system } = self;
        let mut parts = Vec::new();
        if let (Some(sys), Some(first)) = (default_system, messages.first()) {
            if first.role != Role::System {
                parts.push(ChatPart::Template(format!(
                    "<|im_start|>system\n{sys}<|im_end|>\n"
                )));
            }
        }
        for m in messages {
            parts.push(ChatPart::Template(format!(
                "<|im_start|>{}\n",
                m.role.as_str()
            )));
            parts.push(ChatPart::Content(m.content.clone()));
            parts.push(ChatPart::Template("<|im_end|>\n".into()));
        }
        if add_generation_prompt {
            parts.push(ChatPart::Template("<|im_start|>assistant\n".into()));
        }
        parts
    }

    /// The prompt text for `messages` (the concatenation of [`Self::render_parts`]).
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> String {
        self.render_parts(messages, add_generation_prompt)
            .into_iter()
            .map(|p| match p {
                ChatPart::Template(s) | ChatPart::Content(s) => s,
            })
            .collect()
    }
}

/// A piece of a rendered chat prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatPart {
    /// Markup written by the template: control tokens such as `<|im_start|>` are parsed.
    Template(String),
    /// Text from a message: tokenized as plain text, so a user who types `<|im_end|>` cannot
    /// end a turn or inject a system message.
    Content(String),
}

/// Token ids of a rendered chat prompt: control tokens parsed in template markup only.
///
/// # Errors
/// Tokenizer errors.
pub fn encode_chat(tokenizer: &GgufTokenizer, parts: &[ChatPart]) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for p in parts {
        match p {
            ChatPart::Template(s) => ids.extend(tokenizer.encode(s, true)?),
            ChatPart::Content(s) => ids.extend(tokenizer.encode(s, false)?),
        }
    }
    Ok(ids)
}

/// Finds a literal `<|im_start|>system\n…<|im_end|>` in the template (the newline may be
/// written as a real newline or as `\n` inside a Jinja string).
fn default_system_prompt(t: &str) -> Option<String> {
    const START: &str = "<|im_start|>system";
    let mut rest = t;
    while let Some(i) = rest.find(START) {
        rest = &rest[i + START.len()..];
        let body = rest.strip_prefix('\n').or_else(|| rest.strip_prefix("\\n"));
        if let Some(body) = body {
            if let Some(end) = body.find("<|im_end|>") {
                let text = &body[..end];
                if !text.contains(['{', '\'', '}']) && !text.is_empty() {
                    return Some(text.to_string());
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smollm2_template_renders_default_system() {
        let t = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}";
        let c = ChatTemplate::from_jinja(t).unwrap();
        let s = c.render(
            &[ChatMessage {
                role: Role::User,
                content: "Hi".into(),
            }],
            true,
        );
        assert_eq!(
            s,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn qwen_template_escaped_newline() {
        let t = r"{%- if tools %}{{- '<|im_start|>system\n' }}{%- else %}{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}";
        assert_eq!(
            ChatTemplate::from_jinja(t).unwrap(),
            ChatTemplate::ChatMl {
                default_system: Some(
                    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.".into()
                )
            }
        );
    }

    #[test]
    fn non_chatml_rejected() {
        assert!(ChatTemplate::from_jinja("{{ bos_token }}[INST]").is_err());
    }
}
