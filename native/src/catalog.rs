//! The compiled catalog as Python hands it in (JSON): each meter's rules, as
//! `streams.usage.validate.MeterRules` holds them, and the fold plan of
//! `streams.usage.engine.fold.compile_plan`.

use crate::decode::{parse, Json};
use crate::dedup::{FastMap, FastSet};
use crate::expressions::compile;
use crate::fold::{Plan, Route, Target};
use crate::validate::{MeterRules, NUMBER_MAPS, STRING_MAPS};
use std::sync::Arc;

fn text(value: Option<&Json>, what: &str) -> Result<String, String> {
    value
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .ok_or_else(|| format!("catalog: {} expected", what))
}

fn list<'a>(value: Option<&'a Json<'a>>, what: &str) -> Result<&'a [Json<'a>], String> {
    match value {
        Some(Json::Arr(items)) => Ok(items),
        _ => Err(format!("catalog: {} list expected", what)),
    }
}

pub fn read(spec: &[u8]) -> Result<(FastMap<String, MeterRules>, Plan), String> {
    let document = parse(spec).map_err(|e| format!("catalog: {}", e))?;
    let mut meters = FastMap::default();
    for meter in list(document.get("meters"), "meters")? {
        let code = text(meter.get("code"), "code")?;
        let mut fields = FastMap::default();
        for name in STRING_MAPS.iter().chain(NUMBER_MAPS.iter()) {
            let codes = list(meter.get("fields").and_then(|f| f.get(name)), name)?;
            let codes: FastSet<String> = codes
                .iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect();
            fields.insert(name.to_string(), codes);
        }
        let derived_codes = list(meter.get("derived_codes"), "derived_codes")?
            .iter()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect();
        let mut required = Vec::new();
        for item in list(meter.get("required"), "required")? {
            let Json::Arr(parts) = item else {
                return Err("catalog: required".into());
            };
            let part = |i: usize| text(parts.get(i), "required item");
            required.push((part(0)?, part(1)?, part(2)?));
        }
        let broken = match meter.get("broken") {
            Some(Json::Arr(parts)) => Some((
                text(parts.first(), "broken")?,
                text(parts.get(1), "broken")?,
            )),
            _ => None,
        };
        let mut derived = Vec::new();
        for item in list(meter.get("derived"), "derived")? {
            let Json::Arr(parts) = item else {
                return Err("catalog: derived".into());
            };
            let calculation = text(parts.get(2), "calculation")?;
            let expression = compile(&calculation).map_err(|e| {
                format!(
                    "meter {:?}: calculation {:?} does not compile here: {}",
                    code, calculation, e
                )
            })?;
            derived.push((
                text(parts.first(), "derived code")?,
                text(parts.get(1), "derived map")?,
                expression,
            ));
        }
        meters.insert(
            code.clone(),
            MeterRules {
                code,
                fields,
                derived_codes,
                required,
                broken,
                derived,
            },
        );
    }
    let mut plan = Plan::default();
    for meter in list(document.get("plan"), "plan")? {
        let code = text(meter.get("meter"), "plan meter")?;
        let mut targets = Vec::new();
        for target in list(meter.get("targets"), "targets")? {
            let mut cells = Vec::new();
            for cell in list(target.get("cells"), "cells")? {
                let Json::Arr(parts) = cell else {
                    return Err("catalog: cell".into());
                };
                let kind = parts
                    .get(2)
                    .and_then(|k| k.as_int())
                    .ok_or("catalog: cell kind")?;
                let key = (
                    text(parts.first(), "cell code")?.into(),
                    text(parts.get(1), "segment")?.into(),
                );
                let route = match parts.get(3) {
                    None | Some(Json::Null) => None,
                    Some(route) => Some(Arc::new(read_route(route)?)),
                };
                cells.push((key, kind as u8, route));
            }
            targets.push(Target {
                field: text(target.get("field"), "field")?,
                numeric: matches!(target.get("numeric"), Some(Json::Bool(true))),
                distinct: matches!(target.get("distinct"), Some(Json::Bool(true))),
                cells,
            });
        }
        plan.insert(code, targets);
    }
    Ok((meters, plan))
}

fn texts(value: Option<&Json>, what: &str) -> Result<Vec<String>, String> {
    list(value, what)?
        .iter()
        .map(|item| text(Some(item), what))
        .collect()
}

/// A cell's route: `{"filters": [[field, keep, [values]]], "segments": [[id, [[field,
/// value or null]]]], "default": id}`.
fn read_route(route: &Json) -> Result<Route, String> {
    let mut filters = Vec::new();
    for filter in list(route.get("filters"), "route filters")? {
        let Json::Arr(parts) = filter else {
            return Err("catalog: route filter".into());
        };
        filters.push((
            text(parts.first(), "filter field")?,
            matches!(parts.get(1), Some(Json::Bool(true))),
            texts(parts.get(2), "filter values")?,
        ));
    }
    let mut segments = Vec::new();
    for segment in list(route.get("segments"), "route segments")? {
        let Json::Arr(parts) = segment else {
            return Err("catalog: route segment".into());
        };
        let mut conditions = Vec::new();
        for condition in list(parts.get(1), "segment conditions")? {
            let Json::Arr(pair) = condition else {
                return Err("catalog: segment condition".into());
            };
            let wanted = match pair.get(1) {
                Some(Json::Null) => None,
                other => Some(text(other, "segment value")?),
            };
            conditions.push((text(pair.first(), "segment field")?, wanted));
        }
        segments.push((
            Arc::from(text(parts.first(), "segment id")?.as_str()),
            conditions,
        ));
    }
    Ok(Route {
        filters,
        segments,
        default: Arc::from(text(route.get("default"), "route default")?.as_str()),
    })
}
