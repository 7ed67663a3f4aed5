//! A login: what leasegate sends in its own `AUTH` (on its connections to
//! its node, to another leasegate, to a Sentinel). A password, and the ACL
//! user it belongs to where the server has ACL users: Redis 6+ with
//! `user default off` refuses `AUTH <password>` alone (it names the
//! `default` user), so such a node needs `AUTH <user> <password>`.

use std::fmt;

use bytes::Bytes;

/// A password, and the ACL user it belongs to (`None`: the `default` user,
/// as `requirepass` sets it, and Kvrocks, which has no ACL users).
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    /// The ACL user; `None` sends the password alone.
    pub user: Option<String>,
    /// The password.
    pub password: String,
}

impl Login {
    /// A login by password alone (the `default` user).
    pub fn password(password: &str) -> Login {
        Login {
            user: None,
            password: password.to_string(),
        }
    }

    /// The arguments of its `AUTH` request: `AUTH [user] password`.
    pub fn auth_args(&self) -> Vec<&str> {
        let mut args = vec!["AUTH"];
        args.extend(self.user.as_deref());
        args.push(&self.password);
        args
    }

    /// Its `AUTH` request, encoded.
    pub fn auth_request(&self) -> Bytes {
        let args: Vec<&[u8]> = self.auth_args().iter().map(|a| a.as_bytes()).collect();
        super::encode::request(&args)
    }

    /// The user a `HELLO ... AUTH <user> <password>` names for it.
    pub fn hello_user(&self) -> &str {
        self.user.as_deref().unwrap_or("default")
    }
}

/// Never prints the password (logs, `check-config`).
impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_names_the_user_only_when_there_is_one() {
        assert_eq!(Login::password("pw").auth_args(), ["AUTH", "pw"]);
        let acl = Login {
            user: Some("lg".into()),
            password: "pw".into(),
        };
        assert_eq!(acl.auth_args(), ["AUTH", "lg", "pw"]);
        assert_eq!(
            acl.auth_request().as_ref(),
            b"*3\r\n$4\r\nAUTH\r\n$2\r\nlg\r\n$2\r\npw\r\n"
        );
        assert_eq!(acl.hello_user(), "lg");
        assert_eq!(Login::password("pw").hello_user(), "default");
        assert!(!format!("{acl:?}").contains("pw"));
    }
}
