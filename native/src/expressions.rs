//! Derived fields: `streams.expressions`' language, parsed the same way and evaluated in
//! the same 28-digit half-even decimal context. Only calculations that compiled in Python
//! reach here (a meter whose calculation does not compile is refused before), so a parse
//! error is a disagreement between the two parsers and refuses the catalog.

use crate::dec::{Dec, DecError, PREC};

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Number,
    Name,
    Field,
    Op,
    Keyword,
    End,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    text: String,
    pos: usize,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let pos = i + 1;
        if c.is_whitespace() {
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            continue;
        }
        let digit = |at: usize| at < chars.len() && chars[at].is_ascii_digit();
        if c.is_ascii_digit() || (c == '.' && digit(i + 1)) {
            let start = i;
            while digit(i) {
                i += 1;
            }
            if i < chars.len() && chars[i] == '.' {
                i += 1;
                while digit(i) {
                    i += 1;
                }
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                let mut j = i + 1;
                if j < chars.len() && (chars[j] == '+' || chars[j] == '-') {
                    j += 1;
                }
                if digit(j) {
                    i = j;
                    while digit(i) {
                        i += 1;
                    }
                }
            }
            tokens.push(Token {
                kind: Kind::Number,
                text: chars[start..i].iter().collect(),
                pos,
            });
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let lower = word.to_lowercase();
            if lower == "and" || lower == "or" || lower == "not" {
                tokens.push(Token {
                    kind: Kind::Keyword,
                    text: lower,
                    pos,
                });
            } else {
                tokens.push(Token {
                    kind: Kind::Name,
                    text: word,
                    pos,
                });
            }
            continue;
        }
        if c == '`' {
            let start = i + 1;
            let mut j = start;
            while j < chars.len() && chars[j] != '`' {
                j += 1;
            }
            if j >= chars.len() || j == start {
                return Err(format!("bad field name at {}", pos));
            }
            tokens.push(Token {
                kind: Kind::Field,
                text: chars[start..j].iter().collect(),
                pos,
            });
            i = j + 1;
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        if ["<=", ">=", "==", "!="].contains(&two.as_str()) {
            tokens.push(Token {
                kind: Kind::Op,
                text: two,
                pos,
            });
            i += 2;
            continue;
        }
        if "-+*/%<>(),".contains(c) {
            tokens.push(Token {
                kind: Kind::Op,
                text: c.to_string(),
                pos,
            });
            i += 1;
            continue;
        }
        return Err(format!("unexpected character {:?} at {}", c, pos));
    }
    tokens.push(Token {
        kind: Kind::End,
        text: String::new(),
        pos: chars.len() + 1,
    });
    Ok(tokens)
}

#[derive(Debug, Clone)]
pub enum Node {
    Number(Dec),
    Field(String),
    Plus(Box<Node>),
    Minus(Box<Node>),
    Not(Box<Node>),
    Binary(String, Box<Node>, Box<Node>, usize),
    Call(String, Vec<Node>, usize),
    Round(Box<Node>, i64, usize),
}

struct Parser {
    tokens: Vec<Token>,
    index: usize,
}

impl Parser {
    fn token(&self) -> &Token {
        &self.tokens[self.index]
    }

    fn at(&self, kind: Kind, texts: &[&str]) -> bool {
        let token = self.token();
        token.kind == kind && (texts.is_empty() || texts.contains(&token.text.as_str()))
    }

    fn advance(&mut self) -> Token {
        let token = self.tokens[self.index].clone();
        self.index += 1;
        token
    }

    fn expect(&mut self, text: &str) -> Result<(), String> {
        if !self.at(Kind::Op, &[text]) {
            return Err(format!("expected '{}' at {}", text, self.token().pos));
        }
        self.advance();
        Ok(())
    }

    fn parse_or(&mut self) -> Result<Node, String> {
        let mut left = self.parse_and()?;
        while self.at(Kind::Keyword, &["or"]) {
            let pos = self.advance().pos;
            let right = self.parse_and()?;
            left = Node::Binary("or".into(), Box::new(left), Box::new(right), pos);
        }
        Ok(left)
    }

    fn parse_and(&mut self) -> Result<Node, String> {
        let mut left = self.parse_not()?;
        while self.at(Kind::Keyword, &["and"]) {
            let pos = self.advance().pos;
            let right = self.parse_not()?;
            left = Node::Binary("and".into(), Box::new(left), Box::new(right), pos);
        }
        Ok(left)
    }

    fn parse_not(&mut self) -> Result<Node, String> {
        if self.at(Kind::Keyword, &["not"]) {
            self.advance();
            return Ok(Node::Not(Box::new(self.parse_not()?)));
        }
        self.parse_comparison()
    }

    fn parse_comparison(&mut self) -> Result<Node, String> {
        let left = self.parse_sum()?;
        if self.at(Kind::Op, &["<", "<=", ">", ">=", "==", "!="]) {
            let token = self.advance();
            let right = self.parse_sum()?;
            return Ok(Node::Binary(
                token.text,
                Box::new(left),
                Box::new(right),
                token.pos,
            ));
        }
        Ok(left)
    }

    fn parse_sum(&mut self) -> Result<Node, String> {
        let mut left = self.parse_product()?;
        while self.at(Kind::Op, &["+", "-"]) {
            let token = self.advance();
            let right = self.parse_product()?;
            left = Node::Binary(token.text, Box::new(left), Box::new(right), token.pos);
        }
        Ok(left)
    }

    fn parse_product(&mut self) -> Result<Node, String> {
        let mut left = self.parse_unary()?;
        while self.at(Kind::Op, &["*", "/", "%"]) {
            let token = self.advance();
            let right = self.parse_unary()?;
            left = Node::Binary(token.text, Box::new(left), Box::new(right), token.pos);
        }
        Ok(left)
    }

    fn parse_unary(&mut self) -> Result<Node, String> {
        if self.at(Kind::Op, &["-", "+"]) {
            let token = self.advance();
            let operand = Box::new(self.parse_unary()?);
            return Ok(if token.text == "-" {
                Node::Minus(operand)
            } else {
                Node::Plus(operand)
            });
        }
        self.parse_primary()
    }

    fn parse_primary(&mut self) -> Result<Node, String> {
        let token = self.token().clone();
        match token.kind {
            Kind::Number => {
                self.advance();
                let value = Dec::parse(&token.text)
                    .ok_or_else(|| format!("bad number {:?} at {}", token.text, token.pos))?;
                Ok(Node::Number(value))
            }
            Kind::Name if self.tokens[self.index + 1].text == "(" => self.parse_call(),
            Kind::Name | Kind::Field => {
                self.advance();
                Ok(Node::Field(token.text))
            }
            Kind::Op if token.text == "(" => {
                self.advance();
                let inner = self.parse_or()?;
                self.expect(")")?;
                Ok(inner)
            }
            _ => Err(format!(
                "expected a number, a field or '(' at {}",
                token.pos
            )),
        }
    }

    fn parse_call(&mut self) -> Result<Node, String> {
        let token = self.advance();
        let name = token.text.to_lowercase();
        self.expect("(")?;
        let mut args = vec![self.parse_or()?];
        while self.at(Kind::Op, &[","]) {
            self.advance();
            args.push(self.parse_or()?);
        }
        self.expect(")")?;
        let arity_ok = match name.as_str() {
            "min" | "max" => !args.is_empty(),
            "abs" | "floor" | "ceil" => args.len() == 1,
            "round" => args.len() == 1 || args.len() == 2,
            "if" => args.len() == 3,
            _ => {
                return Err(format!(
                    "unknown function {:?} at {}",
                    token.text, token.pos
                ))
            }
        };
        if !arity_ok {
            return Err(format!("{}() arguments at {}", name, token.pos));
        }
        if name == "round" {
            let places = if args.len() == 2 {
                let value = evaluate(&args[1], &|_| None).map_err(|e| format!("round(): {}", e))?;
                let whole = value.to_integral(true);
                if whole != value
                    || whole.cmp_value(&Dec::from_i64(PREC as i64)).is_gt()
                    || whole.cmp_value(&Dec::from_i64(-(PREC as i64))).is_lt()
                {
                    return Err(format!("round() places at {}", token.pos));
                }
                let text = whole.canonical_text();
                text.parse::<i64>().map_err(|e| e.to_string())?
            } else {
                0
            };
            let x = args.into_iter().next().expect("one argument");
            return Ok(Node::Round(Box::new(x), places, token.pos));
        }
        Ok(Node::Call(name, args, token.pos))
    }
}

/// A compiled calculation and the fields it reads.
#[derive(Debug, Clone)]
pub struct Expression {
    pub tree: Node,
    pub fields: Vec<String>,
}

fn referenced(node: &Node, out: &mut Vec<String>) {
    match node {
        Node::Number(_) => {}
        Node::Field(code) => {
            if !out.contains(code) {
                out.push(code.clone())
            }
        }
        Node::Plus(x) | Node::Minus(x) | Node::Not(x) | Node::Round(x, _, _) => referenced(x, out),
        Node::Binary(_, a, b, _) => {
            referenced(a, out);
            referenced(b, out);
        }
        Node::Call(_, args, _) => args.iter().for_each(|arg| referenced(arg, out)),
    }
}

pub fn compile(text: &str) -> Result<Expression, String> {
    let mut parser = Parser {
        tokens: tokenize(text)?,
        index: 0,
    };
    let tree = parser.parse_or()?;
    if !parser.at(Kind::End, &[]) {
        return Err(format!("expected an operator at {}", parser.token().pos));
    }
    let mut fields = Vec::new();
    referenced(&tree, &mut fields);
    Ok(Expression { tree, fields })
}

fn truth(value: bool) -> Dec {
    Dec::from_i64(value as i64)
}

/// The value of `node` for these field values, or the reason (as `ExpressionError` words it).
pub fn evaluate(node: &Node, values: &dyn Fn(&str) -> Option<Dec>) -> Result<Dec, String> {
    Ok(match node {
        Node::Number(value) => value.clone(),
        Node::Field(code) => {
            values(code).ok_or_else(|| format!("missing value for field '{}'", code))?
        }
        Node::Plus(x) => evaluate(x, values)?,
        Node::Minus(x) => evaluate(x, values)?.minus(),
        Node::Not(x) => truth(evaluate(x, values)?.is_zero()),
        Node::Binary(op, a, b, pos) => {
            if op == "and" {
                let left = evaluate(a, values)?;
                return Ok(truth(!left.is_zero() && !evaluate(b, values)?.is_zero()));
            }
            if op == "or" {
                let left = evaluate(a, values)?;
                return Ok(truth(!left.is_zero() || !evaluate(b, values)?.is_zero()));
            }
            let (left, right) = (evaluate(a, values)?, evaluate(b, values)?);
            match op.as_str() {
                "+" => left.add(&right),
                "-" => left.sub(&right),
                "*" => left.mul(&right),
                "/" => {
                    if right.is_zero() {
                        return Err(format!("division by zero at {}", pos));
                    }
                    left.div(&right)
                }
                "%" => {
                    if right.is_zero() {
                        return Err(format!("remainder of division by zero at {}", pos));
                    }
                    left.rem(&right).map_err(arithmetic)?
                }
                "<" => truth(left.cmp_value(&right).is_lt()),
                "<=" => truth(left.cmp_value(&right).is_le()),
                ">" => truth(left.cmp_value(&right).is_gt()),
                ">=" => truth(left.cmp_value(&right).is_ge()),
                "==" => truth(left.cmp_value(&right).is_eq()),
                "!=" => truth(left.cmp_value(&right).is_ne()),
                _ => return Err(format!("unknown operator {}", op)),
            }
        }
        Node::Call(name, args, _) => match name.as_str() {
            "min" | "max" => {
                let mut best = evaluate(&args[0], values)?;
                for arg in &args[1..] {
                    let value = evaluate(arg, values)?;
                    let better = if name == "min" {
                        value.cmp_value(&best).is_lt()
                    } else {
                        value.cmp_value(&best).is_gt()
                    };
                    if better {
                        best = value;
                    }
                }
                best
            }
            "abs" => evaluate(&args[0], values)?.abs(),
            "floor" => evaluate(&args[0], values)?.to_integral(true),
            "ceil" => evaluate(&args[0], values)?.to_integral(false),
            "if" => {
                if !evaluate(&args[0], values)?.is_zero() {
                    evaluate(&args[1], values)?
                } else {
                    evaluate(&args[2], values)?
                }
            }
            _ => return Err(format!("unknown function {}", name)),
        },
        Node::Round(x, places, pos) => {
            let value = evaluate(x, values)?;
            let too_long = || format!("round() result needs more than {} digits at {}", PREC, pos);
            let rounded = value.quantize_half_up(-places).map_err(|_| too_long())?;
            if *places < 0 {
                rounded.quantize_half_up(0).map_err(|_| too_long())?
            } else {
                rounded
            }
        }
    })
}

fn arithmetic(error: DecError) -> String {
    match error {
        DecError::InvalidOperation => "arithmetic error: InvalidOperation".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, fields: &[(&str, &str)]) -> Result<String, String> {
        let expression = compile(text)?;
        let lookup = |code: &str| {
            fields
                .iter()
                .find(|(c, _)| *c == code)
                .map(|(_, v)| Dec::parse(v).unwrap())
        };
        evaluate(&expression.tree, &lookup).map(|v| v.canonical_text())
    }

    #[test]
    fn arithmetic_is_pythons_decimal_context() {
        assert_eq!(run("bytes / 1000", &[("bytes", "1234")]).unwrap(), "1.234");
        assert_eq!(
            run("a / 3", &[("a", "1")]).unwrap(),
            "0.3333333333333333333333333333"
        );
        assert_eq!(run("round(a, 2)", &[("a", "2.345")]).unwrap(), "2.35");
        assert_eq!(run("round(1234, -2)", &[]).unwrap(), "1200");
        assert_eq!(
            run("if(a > 2 and not 0, -a, a % 2)", &[("a", "3")]).unwrap(),
            "-3"
        );
        assert_eq!(
            run("MAX(a, 2, `b`) + floor(-1.5)", &[("a", "1"), ("b", "7")]).unwrap(),
            "5"
        );
        assert_eq!(
            run("2 ^ 3", &[]).unwrap_err(),
            "unexpected character '^' at 3"
        );
    }

    #[test]
    fn errors_name_the_position() {
        assert_eq!(
            run("a / (a - a)", &[("a", "1")]).unwrap_err(),
            "division by zero at 3"
        );
        assert_eq!(
            run("1 % a", &[("a", "0")]).unwrap_err(),
            "remainder of division by zero at 3"
        );
        assert_eq!(
            run("a % 3", &[("a", "1E+30")]).unwrap_err(),
            "arithmetic error: InvalidOperation"
        );
        assert_eq!(
            run("round(a)", &[("a", "1E+29")]).unwrap_err(),
            "round() result needs more than 28 digits at 1"
        );
    }
}
