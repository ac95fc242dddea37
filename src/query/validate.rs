//! The entity validator: every mention checked against the source of truth, and the facts an
//! answer may state about it gathered — exists, requestable, approver, already held by the
//! asker, segregation-of-duties conflicts with what the asker holds.
//!
//! Disclosure is decided here, once, so no generator can leak what it was never given:
//! role, application and approver facts are open; a person's assignments reach only that
//! person, their manager, or a configured admin.

use serde::Serialize;

use super::understand::{Intent, Matcher, Mention, Understanding};
use crate::catalog::{AppFacts, ApproverGroup, Catalog, CatalogError, EntityKind, Ref, RoleFacts, SodRule, UserFacts};

#[derive(Clone, Debug, Serialize)]
pub struct RoleCheck {
    pub facts: RoleFacts,
    /// Whether the asker holds it; `None` when the asker is unknown.
    pub held: Option<bool>,
    /// Rules whose other role the asker holds: requesting this one would break them.
    pub conflicts: Vec<SodRule>,
    /// Every SoD rule naming the role.
    pub rules: Vec<SodRule>,
}

#[derive(Clone, Debug, Serialize)]
pub struct UserCheck {
    pub facts: UserFacts,
    /// The user's roles, when the asker may see them.
    pub roles: Option<Vec<Ref>>,
    /// Asked for and refused.
    pub refused: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Unknown {
    pub kind: EntityKind,
    pub text: String,
    /// The nearest real entities by name.
    pub closest: Vec<Ref>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Checked {
    pub asker: Option<UserFacts>,
    pub roles: Vec<RoleCheck>,
    pub applications: Vec<AppFacts>,
    pub groups: Vec<(ApproverGroup, Vec<Ref>)>,
    pub users: Vec<UserCheck>,
    pub unknown: Vec<Unknown>,
}

/// Who asks and who may see whose assignments.
pub struct Policy<'a> {
    /// The asker's login or id, as authenticated (or, without auth, as the request says).
    pub asker: Option<&'a str>,
    /// Logins or ids that may see anyone's assignments.
    pub admins: &'a [String],
}

impl Checked {
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
            && self.applications.is_empty()
            && self.groups.is_empty()
            && self.users.is_empty()
            && self.unknown.is_empty()
    }
}

/// Checks every mention (plus the asker) against the catalogue.
pub async fn validate(
    catalog: &dyn Catalog,
    matcher: &Matcher,
    understanding: &Understanding,
    mentions: &[Mention],
    policy: &Policy<'_>,
) -> Result<Checked, CatalogError> {
    let mut out = Checked::default();
    let asker_entity = policy.asker.and_then(|a| matcher.lookup(EntityKind::User, a));
    if let Some(a) = asker_entity {
        out.asker = catalog.user(&a.id).await?;
    }
    let asker_roles = match &out.asker {
        Some(a) => Some(catalog.user_roles(&a.id).await?),
        None => None,
    };
    let is_admin = |u: &UserFacts| {
        policy.admins.iter().any(|x| x.eq_ignore_ascii_case(&u.id) || x.eq_ignore_ascii_case(&u.username))
    };
    for m in mentions {
        let Some(e) = &m.entity else {
            let closest = matcher
                .closest(m.kind, &m.text, 3)
                .into_iter()
                .map(|e| Ref { id: e.id.clone(), name: e.name.clone() })
                .collect();
            out.unknown.push(Unknown { kind: m.kind, text: m.text.clone(), closest });
            continue;
        };
        match e.kind {
            EntityKind::Role => {
                if out.roles.iter().any(|r| r.facts.id == e.id) {
                    continue;
                }
                match catalog.role(&e.id).await? {
                    Some(facts) => {
                        let rules = catalog.sod_rules(&facts.id).await?;
                        let held = asker_roles.as_ref().map(|rs| rs.iter().any(|r| r.id == facts.id));
                        let conflicts = match &asker_roles {
                            Some(rs) => {
                                rules.iter().filter(|s| rs.iter().any(|r| r.id == s.other.id)).cloned().collect()
                            }
                            None => vec![],
                        };
                        out.roles.push(RoleCheck { facts, held, conflicts, rules });
                    }
                    // Named in the cached names but gone from the source: not there.
                    None => out.unknown.push(Unknown { kind: e.kind, text: m.text.clone(), closest: vec![] }),
                }
            }
            EntityKind::Application => {
                if out.applications.iter().any(|a| a.id == e.id) {
                    continue;
                }
                match catalog.application(&e.id).await? {
                    Some(a) => out.applications.push(a),
                    None => out.unknown.push(Unknown { kind: e.kind, text: m.text.clone(), closest: vec![] }),
                }
            }
            EntityKind::ApproverGroup => {
                if out.groups.iter().any(|g| g.0.id == e.id) {
                    continue;
                }
                match catalog.approver_group(&e.id).await? {
                    Some(g) => out.groups.push(g),
                    None => out.unknown.push(Unknown { kind: e.kind, text: m.text.clone(), closest: vec![] }),
                }
            }
            EntityKind::User => {
                if out.users.iter().any(|u| u.facts.id == e.id) {
                    continue;
                }
                let Some(facts) = catalog.user(&e.id).await? else {
                    out.unknown.push(Unknown { kind: e.kind, text: m.text.clone(), closest: vec![] });
                    continue;
                };
                let (roles, refused) = if understanding.intent == Intent::UserRoles {
                    let allowed = out.asker.as_ref().is_some_and(|a| {
                        a.id == facts.id || facts.manager_id.as_deref() == Some(a.id.as_str()) || is_admin(a)
                    });
                    if allowed {
                        (Some(catalog.user_roles(&facts.id).await?), false)
                    } else {
                        (None, true)
                    }
                } else {
                    (None, false)
                };
                out.users.push(UserCheck { facts, roles, refused });
            }
        }
    }
    // "what roles do I have?" names no user: the asker is the subject.
    if understanding.intent == Intent::UserRoles && out.users.is_empty() && understanding.about_self {
        if let (Some(a), Some(roles)) = (&out.asker, &asker_roles) {
            out.users.push(UserCheck { facts: a.clone(), roles: Some(roles.clone()), refused: false });
        }
    }
    Ok(out)
}
