"""A small bank: accounts, transfers and one failure, to look at in CodeTracer."""

from dataclasses import dataclass, field


@dataclass
class Account:
    owner: str
    balance: int = 0
    history: list = field(default_factory=list)

    def deposit(self, amount):
        self.balance += amount
        self.history.append(("deposit", amount))

    def withdraw(self, amount):
        if amount > self.balance:
            raise ValueError(f"{self.owner} cannot withdraw {amount}")
        self.balance -= amount
        self.history.append(("withdraw", amount))


def transfer(source, target, amount):
    source.withdraw(amount)
    target.deposit(amount)
    return source.balance, target.balance


def main():
    alice = Account("alice", 100)
    bob = Account("bob")
    print("after first transfer:", transfer(alice, bob, 30))
    try:
        transfer(bob, alice, 500)
    except ValueError as error:
        print("refused:", error)
    interest = [round(a.balance * 0.05, 2) for a in (alice, bob)]
    print("interest:", interest)


if __name__ == "__main__":
    main()
